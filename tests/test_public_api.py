"""The public surface: names of the spec table exist, namespaces are thin and light."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

import sagents
import sagents.a2a
import sagents.agui
import sagents.events
import sagents.execution
import sagents.middleware
import sagents.runtime
import sagents.testing

NAMESPACES = [
    sagents,
    sagents.execution,
    sagents.middleware,
    sagents.runtime,
    sagents.events,
    sagents.testing,
    sagents.a2a,
    sagents.agui,
]


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_all_is_sorted_and_complete(namespace: object) -> None:
    exported = namespace.__all__  # type: ignore[attr-defined]
    assert sorted(exported) == list(exported)
    public = {
        name
        for name, value in vars(namespace).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    if namespace is sagents:
        public |= {"__version__", "events", "telemetry"}
        public -= {"annotations"}
    missing = set(exported) - set(vars(namespace))
    assert not missing
    if namespace is not sagents.events:
        assert public <= set(exported) | {"annotations"}


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_exported_objects_report_a_public_module(namespace: object) -> None:
    for name in namespace.__all__:  # type: ignore[attr-defined]
        obj = getattr(namespace, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            module = obj.__module__
            assert module.startswith(("sagents", "langchain"))
            assert not any(part.startswith("_") for part in module.split(".")), (name, module)


def test_spec_table_names_exist() -> None:
    for name in [
        "Agent",
        "State",
        "Status",
        "SagentsError",
        "AgentNotRunning",
        "AgentAlreadyRunning",
        "InvalidTransition",
        "RegistryUnavailable",
    ]:
        assert hasattr(sagents, name), name
    assert {s.value for s in sagents.Status} == {
        "idle",
        "running",
        "interrupted",
        "cancelled",
        "error",
        "paused",
    }
    assert sagents.Status.IDLE == "idle"
    for name in ["StatusChanged", "AgentShutdown", "LLMDeltas", "LLMMessage", "TodosUpdated"]:
        assert hasattr(sagents.events, name), name
    for name in ["attach", "attach_many", "detach"]:
        assert hasattr(sagents.telemetry, name), name


def test_every_error_derives_from_sagents_error() -> None:
    errors = [
        obj
        for name in sagents.__all__
        if inspect.isclass(obj := getattr(sagents, name)) and issubclass(obj, Exception)
    ]
    assert len(errors) > 10
    assert all(issubclass(e, sagents.SagentsError) for e in errors)


def test_import_sagents_does_not_pull_integrations() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"sqlalchemy", "starlette", "fastapi", "uvicorn"}:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import sagents, sagents.execution, sagents.middleware, sagents.events, sagents.runtime
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("sagents").joinpath("py.typed").is_file()


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("ScriptedChatModel", sagents.testing),
        ("ScriptExhausted", sagents.testing),
        ("ChildNotFound", sagents.runtime),
        ("SupervisionError", sagents.runtime),
        ("SupervisorGaveUp", sagents.runtime),
    ],
)
def test_moved_names_keep_working_for_one_release_with_a_warning(name: str, home: object) -> None:
    assert name not in sagents.__all__
    with pytest.warns(DeprecationWarning, match=f"moved to {home.__name__}"):  # type: ignore[attr-defined]
        old = getattr(sagents, name)
    assert old is getattr(home, name)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        sagents.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
