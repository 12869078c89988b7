"""What the API cannot guarantee: settings written through it outlive a restart only while Open
WebUI keeps ENABLE_PERSISTENT_CONFIG on. Two restarts of the session's instance (~30 s)."""

from __future__ import annotations

import pytest

from reconciler.targets.openwebui.diff import PERSISTENCE_NOTE

from .conftest import Instance, run

pytestmark = pytest.mark.openwebui


def test_settings_outlive_a_restart_only_with_persistent_config(converged: Instance) -> None:
    state = converged.state()
    converged.owui.restart(env={"ENABLE_PERSISTENT_CONFIG": "false"})
    try:
        lost = run(state, apply=False)
        paths = {c.path_text for c in lost.plan.changes}
        # env and defaults won; model entries are table rows and stayed
        assert {"settings.task_model", "settings.code_interpreter", "settings.default_user_role"} <= paths
        assert all(p.startswith("settings.") for p in paths), paths
        assert PERSISTENCE_NOTE in [n.message for n in lost.plan.notes]
        fixed = run(state)
        assert fixed.report is not None and fixed.report.ok, fixed.report.to_json()
        assert run(state).writes == []
    finally:
        converged.owui.restart(env={"ENABLE_PERSISTENT_CONFIG": "true"})
    # the database still holds what the earlier passes wrote
    after = run(state, apply=False)
    assert after.plan.changes == () and not after.plan.problems
