"""``/v1/models``: the one model this deployment serves (what ``body.model`` must name)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentCaller, SettingsDep
from api.openapi import error_responses
from api.schemas import ListPage, ModelObject
from hybatch.errors import NotFoundError

router = APIRouter(prefix="/v1/models", tags=["models"])

OWNER = "hybatch"


def _served_model(settings: SettingsDep) -> ModelObject:
    return ModelObject(id=settings.model_name, created=0, owned_by=OWNER)


@router.get("", responses=error_responses(401))
def list_models(_caller: CurrentCaller, settings: SettingsDep) -> ListPage[ModelObject]:
    return ListPage.of([_served_model(settings)], has_more=False)


@router.get("/{model_id}", responses=error_responses(401, 404))
def retrieve_model(_caller: CurrentCaller, settings: SettingsDep, model_id: str) -> ModelObject:
    if model_id != settings.model_name:
        raise NotFoundError(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return _served_model(settings)
