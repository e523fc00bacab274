from worker.kv_cache.planner import plan_batch

B = 4


def test_depth_first_order_groups_shared_prefixes_and_waits_for_the_leader():
    sys_a = list(range(100, 112))  # 3 blocks
    sys_b = list(range(200, 212))
    prompts = [sys_a + [1, 2], sys_b + [3], sys_a + [4, 5, 6, 7, 8], sys_b + [9, 9], sys_a]
    plans = plan_batch(prompts, [None] * 5, B)
    order = [p.index for p in plans]
    # Depth-first: sys_a's requests together (those ending at its 3rd block first), then sys_b's.
    assert order == [0, 4, 2, 1, 3]
    by_index = {p.index: p for p in plans}
    leader_a = order[0]
    assert by_index[leader_a].wait_for is None
    for i in (0, 2, 4):
        assert 12 in by_index[i].retain_at  # the branch point after sys_a
        if i != leader_a:
            assert by_index[i].wait_for == (leader_a, 12)
    leader_b = order[3]
    other_b = order[4]
    assert by_index[other_b].wait_for == (leader_b, 12)


def test_salts_separate_trees():
    prompt = list(range(16))
    plans = plan_batch([prompt, prompt], ["acct_1", "acct_2"], B)
    assert all(p.wait_for is None and not p.retain_at for p in plans)


def test_unique_prompts_have_no_plan():
    plans = plan_batch([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], [None, None], B)
    assert sorted(p.index for p in plans) == [0, 1]
    assert all(p.wait_for is None and not p.retain_at for p in plans)


def test_nested_branch_points_wait_for_the_deepest_shared_prefix():
    base = list(range(8))  # 2 blocks
    mid = base + list(range(50, 58))  # 4 blocks
    prompts = [mid + [1], mid + [2], base + [3]]
    plans = plan_batch(prompts, [None] * 3, B)
    by_index = {p.index: p for p in plans}
    # Request 2 ends at the shallower branch point, so depth-first emits it first: it leads at 8.
    assert [p.index for p in plans] == [2, 0, 1]
    assert by_index[2].wait_for is None
    assert by_index[0].retain_at == {8, 16} and by_index[1].retain_at == {8, 16}
    assert by_index[0].wait_for == (2, 8)  # it leads at 16 itself, so it waits at the shallower point
    assert by_index[1].wait_for == (0, 16)
