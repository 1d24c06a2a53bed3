"""Every CEL rule in the CRDs says the same thing as the pydantic model that declares it."""

from __future__ import annotations

from typing import Any, get_args, get_origin

import celpy
import pytest
from celpy.adapter import json_to_cel
from pydantic import BaseModel, ValidationError

from sedna.resources import CelRule, all_kinds, crd_manifest
from sedna.resources.common import HPASpec
from sedna.resources.federatedlearning import Transmitter


def _models(root: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if root in seen:
        return
    seen.add(root)
    for info in root.model_fields.values():
        stack = [info.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                _models(annotation, seen)
            elif get_origin(annotation) is not None:
                stack.extend(get_args(annotation))


def _declared_rules() -> dict[str, tuple[type[BaseModel], CelRule]]:
    seen: set[type[BaseModel]] = set()
    for info in all_kinds():
        _models(info.spec_model, seen)
        _models(info.status_model, seen)
    return {
        rule.rule: (model, rule) for model in seen for rule in model.__dict__.get("cel_rules", ())
    }


def _crd_rules() -> set[str]:
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        found.update(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
        for sub in node.get("properties", {}).values():
            walk(sub)
        if "items" in node:
            walk(node["items"])

    for info in all_kinds():
        walk(crd_manifest(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return found


# rule -> (model, objects the rule accepts, objects it rejects), as they appear in YAML.
CASES: dict[str, tuple[type[BaseModel], list[dict[str, Any]], list[dict[str, Any]]]] = {
    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas": (
        HPASpec,
        [
            {"maxReplicas": 3},
            {"minReplicas": 1, "maxReplicas": 3},
            {"minReplicas": 3, "maxReplicas": 3},
        ],
        [{"minReplicas": 4, "maxReplicas": 3}, {"minReplicas": 10, "maxReplicas": 1}],
    ),
    "has(self.s3) || has(self.ws)": (
        Transmitter,
        [
            {"ws": {}},
            {"s3": {"aggDataPath": "s3://bucket/agg"}},
            # Upstream's MistNet example sets both; upstream uses s3 then.
            {"ws": {}, "s3": {"aggDataPath": "s3://bucket/agg", "credentialName": "s"}},
        ],
        [{}],
    ),
}


def _cel(rule: str, obj: dict[str, Any]) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    return bool(program.evaluate({"self": json_to_cel(obj)}))


def _pydantic(model: type[BaseModel], obj: dict[str, Any]) -> bool:
    try:
        model.model_validate(obj, by_alias=True, by_name=False)
    except ValidationError:
        return False
    return True


def test_every_rule_is_in_the_crds_and_has_cases() -> None:
    declared = _declared_rules()
    assert set(declared) == _crd_rules()
    assert set(declared) == set(CASES), "add good and bad objects for every CEL rule"
    for rule, (model, _, _) in CASES.items():
        assert declared[rule][0] is model


@pytest.mark.parametrize("rule", sorted(CASES))
def test_cel_and_pydantic_agree(rule: str) -> None:
    model, good, bad = CASES[rule]
    for obj in good:
        assert _cel(rule, obj) is True, obj
        assert _pydantic(model, obj) is True, obj
    for obj in bad:
        assert _cel(rule, obj) is False, obj
        assert _pydantic(model, obj) is False, obj


def test_rule_failure_points_at_the_declared_field() -> None:
    with pytest.raises(ValidationError) as caught:
        HPASpec.model_validate({"minReplicas": 4, "maxReplicas": 3})
    (error,) = caught.value.errors()
    assert error["type"] == "cel_rule"
    assert error["ctx"]["field_path"] == ".minReplicas"
    assert error["msg"] == "minReplicas must be less than or equal to maxReplicas"
