"""The sliding-window-aware prefix KV cache: radix tree over blocks, retained SWA windows, planning."""
