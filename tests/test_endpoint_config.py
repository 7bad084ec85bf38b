"""The generated Globus Compute endpoint configurations: they parse, say what each machine needs, and load
into the endpoint's own configuration classes when ``globus-compute-endpoint`` is installed."""

from __future__ import annotations

import pytest

from sciagent.compute.endpoint_config import MACHINES, render_endpoint_config

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the generated YAML")

EXPECTED = {
    "aurora": {
        "filesystems": "home:flare",
        "workers": 12,
        "accelerators": ["0.0", "0.1", "1.0", "1.1", "2.0", "2.1", "3.0", "3.1", "4.0", "4.1", "5.0", "5.1"],
        "cpus": 208,
    },
    "polaris": {"filesystems": "home:eagle", "workers": 4, "accelerators": ["0", "1", "2", "3"], "cpus": 64},
}


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_config_parses_and_carries_the_machines_facts(machine: str) -> None:
    text = render_endpoint_config(machine, account="MyProject", queue="prod", walltime="02:30:00", nodes=3)
    engine = yaml.safe_load(text)["engine"]
    provider, expected = engine["provider"], EXPECTED[machine]
    assert engine["type"] == "GlobusComputeEngine" and provider["type"] == "PBSProProvider"
    assert engine["max_workers_per_node"] == expected["workers"] == len(engine["available_accelerators"])
    assert engine["available_accelerators"] == expected["accelerators"]
    assert (provider["account"], provider["queue"], provider["walltime"]) == ("MyProject", "prod", "02:30:00")
    assert provider["nodes_per_block"] == 3 and provider["cpus_per_node"] == expected["cpus"]
    assert provider["scheduler_options"] == f"#PBS -l filesystems={expected['filesystems']}"
    assert (
        provider["launcher"]["type"] == "MpiExecLauncher" and "--ppn 1" in provider["launcher"]["overrides"]
    )
    assert provider.get("select_options") == ("ngpus=4" if machine == "polaris" else None)
    assert ("ZE_FLAT_DEVICE_HIERARCHY" in provider["worker_init"]) is (machine == "aurora")


def test_defaults_and_a_given_worker_init() -> None:
    provider = yaml.safe_load(render_endpoint_config("polaris", account="MyProject"))["engine"]["provider"]
    assert (provider["queue"], provider["walltime"], provider["nodes_per_block"]) == ("debug", "01:00:00", 1)
    assert "module load conda" in provider["worker_init"] and "venvs/sciagent" in provider["worker_init"]

    setup = "    module load frameworks\n    conda activate /flare/MyProject/envs/md\n"
    text = render_endpoint_config("aurora", account="MyProject", worker_init=setup)
    worker_init = yaml.safe_load(text)["engine"]["provider"]["worker_init"]
    assert worker_init.startswith("module load frameworks\nconda activate /flare/MyProject/envs/md\n")
    assert worker_init.rstrip().endswith("export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"machine": "frontier"}, "unknown machine 'frontier'"),
        ({"account": ""}, "account must be"),
        ({"account": "my project"}, "account must be"),
        ({"queue": "debug; rm -rf ~"}, "queue must be"),
        ({"walltime": "1:00"}, "walltime must be HH:MM:SS"),
        ({"walltime": "00:00:00"}, "walltime must be HH:MM:SS"),
        ({"nodes": 0}, "nodes must be"),
        ({"nodes": 1.5}, "nodes must be"),
        ({"worker_init": "  \n"}, "worker_init is empty"),
    ],
)
def test_bad_inputs_are_one_line_errors(change: dict, message: str) -> None:
    arguments = {"machine": "polaris", "account": "MyProject", **change}
    with pytest.raises(ValueError, match=message) as raised:
        render_endpoint_config(arguments.pop("machine"), **arguments)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_endpoints_own_config_classes_accept_it(machine: str) -> None:
    utils = pytest.importorskip(
        "globus_compute_endpoint.endpoint.config.utils",
        reason="globus-compute-endpoint is not installed: the endpoint's own validation is skipped",
    )
    config = utils.load_config_yaml(render_endpoint_config(machine, account="MyProject", nodes=2))
    try:
        executor = config.engine.executor
        assert type(config).__name__ == "UserEndpointConfig"
        assert type(executor.provider).__name__ == "PBSProProvider"
        assert type(executor.provider.launcher).__name__ == "MpiExecLauncher"
        assert executor.provider.nodes_per_block == 2 and executor.provider.account == "MyProject"
        assert executor.max_workers_per_node == len(MACHINES[machine].accelerators)
        assert list(executor.available_accelerators) == list(MACHINES[machine].accelerators)
        assert f"filesystems={MACHINES[machine].filesystems}" in executor.provider.scheduler_options
    finally:
        config.engine.shutdown()
