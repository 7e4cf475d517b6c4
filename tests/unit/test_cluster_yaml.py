"""Every YAML under cluster/ and experiments/ parses and validates: experiment configs through
`teamsrl.config.load_config`, the sweep through `teamsrl.sweep.load_sweep`, the vLLM Serve config
through Ray's own schemas, the KubeRay manifest and the cluster-launcher file by structure;
cluster/submit.sh by its own checks (no cluster needed for those)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from teamsrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
EXPERIMENTS = ROOT / "experiments"
SWEEPS = {"sweep-action-sets.yaml"}
CHECKED_HERE = {"serve-vllm.yaml", "kuberay-raycluster.yaml", "cluster-launcher.yaml",
                "runtime_env.yaml"}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_cluster_yaml_is_checked_by_a_test_here():
    assert {p.name for p in CLUSTER.glob("*.yaml")} == CHECKED_HERE


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")
                                        if p.name not in SWEEPS))
def test_experiment_yaml_validates(name):
    config = load_config(EXPERIMENTS / name)
    assert config.name


def test_paper_experiment_has_the_papers_settings():
    c = load_config(EXPERIMENTS / "paper-llama7b.yaml")
    assert len(c.actions.operations) == 6 and not c.actions.include_stop
    assert c.env.horizon == 6 and c.seed == 543
    assert c.generate.forced_actions == {1: "breadth", 4: "breadth"}
    assert c.generate.keep == "all_steps"
    ft = c.finetune
    assert (ft.zero_stage, ft.offload, ft.learning_rate, ft.epochs, ft.max_length) == (
        3, True, 2e-5, 3, 512)
    assert {c.llm.expert.engine, c.llm.reviewer.engine} == {"vllm"}
    assert c.evaluate.tasks == ["arc_challenge", "hellaswag"]
    assert c.evaluate.num_fewshot == {"arc_challenge": 25, "hellaswag": 10}
    serve = _yaml(CLUSTER / "serve-vllm.yaml")
    app = serve["applications"][0]
    ids = {m["model_loading_config"]["model_id"] for m in app["args"]["llm_configs"]}
    assert {c.llm.expert.model, c.llm.reviewer.model} <= ids
    base = f"http://127.0.0.1:{serve['http_options']['port']}{app['route_prefix']}/v1"
    assert c.llm.expert.base_url == c.llm.reviewer.base_url == base
    assert app["route_prefix"] != c.serving.route_prefix  # two apps, one Serve proxy


def test_sweep_yaml_validates_every_trial():
    from teamsrl.sweep import load_sweep

    sweep, experiments = load_sweep(EXPERIMENTS / "sweep-action-sets.yaml")
    assert [t.name for t in sweep.trials] == ["all-six", "no-breadth", "depth-only",
                                             "six-plus-stop", "custom"]
    assert {e.tracking.group for e in experiments.values()} == {sweep.name}
    assert len({e.run_dir for e in experiments.values()}) == len(experiments)
    assert experiments["six-plus-stop"].actions.include_stop
    assert "breadth" not in experiments["no-breadth"].actions.operations
    assert experiments["custom"].actions.custom[0].name == "add_audience"

    sweep, experiments = load_sweep(EXPERIMENTS / "sweep-action-sets.yaml", [
        "run_dir=/shared/sweep", "max_concurrent_trials=2", "policy.iterations=1"])
    assert sweep.run_dir == "/shared/sweep" and sweep.max_concurrent_trials == 2
    assert experiments["depth-only"].run_dir == "/shared/sweep/depth-only"
    assert {e.policy.iterations for e in experiments.values()} == {1}


def test_serve_vllm_config_passes_rays_serve_schemas():
    from ray.serve.schema import ServeDeploySchema

    data = _yaml(CLUSTER / "serve-vllm.yaml")
    schema = ServeDeploySchema.model_validate(data)
    assert schema.http_options.host == "127.0.0.1"
    app = schema.applications[0]
    assert app.import_path == "ray.serve.llm:build_openai_app"
    try:  # the public model needs vLLM (not installed on CPU machines)
        from ray.serve.llm import LLMServingArgs

        LLMServingArgs.model_validate(app.args)
        return
    except ImportError:
        pass
    # ray.serve.llm's LLMConfig itself imports without vLLM; LLMServingArgs' other keys
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    assert set(app.args) <= {"llm_configs", "ingress_cls_config", "ingress_deployment_config"}
    configs = [LLMConfig.model_validate(c) for c in app.args["llm_configs"]]
    assert [c.model_id for c in configs] == ["expert", "reviewer"]
    assert all(c.accelerator_type == "A100" for c in configs)


def test_ray_serve_llm_schema_rejects_a_bad_config():
    """The check above can fail: Ray's LLMConfig forbids unknown keys and bad accelerators."""
    from pydantic import ValidationError
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    good = _yaml(CLUSTER / "serve-vllm.yaml")["applications"][0]["args"]["llm_configs"][0]
    with pytest.raises(ValidationError, match="engine_kwarg"):
        LLMConfig.model_validate(good | {"engine_kwarg": {}})
    with pytest.raises(ValidationError, match="accelerator"):
        LLMConfig.model_validate(good | {"accelerator_type": "NOT-A-GPU"})


def test_kuberay_manifest_has_head_cpu_and_gpu_groups_with_token_auth():
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay-raycluster.yaml").read_text())
            if d]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [("ray.io/v1", "RayCluster")]
    spec = docs[0]["spec"]
    assert spec["rayVersion"] == "2.60.0" and spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"].startswith("rayproject/ray:2.60.0")
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    cpu = groups["cpu-workers"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"]
    # the custom resources the paper config pins replicas and env runners with
    paper = load_config(EXPERIMENTS / "paper-llama7b.yaml")
    for group, wanted in (("gpu-workers", paper.serving.resources),
                          ("cpu-workers", paper.policy.custom_resources_per_env_runner)):
        declared = yaml.safe_load(yaml.safe_load(groups[group]["rayStartParams"]["resources"]))
        assert set(wanted) <= set(declared), (group, wanted, declared)
    assert all("RAY_AUTH_TOKEN" not in str(d) for d in docs)  # no secret in the file


def test_cluster_launcher_has_three_node_types_and_token_auth():
    data = _yaml(CLUSTER / "cluster-launcher.yaml")
    assert data["provider"]["type"] in {"aws", "gcp", "azure"}
    types = data["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert data["head_node_type"] == "head"
    paper = load_config(EXPERIMENTS / "paper-llama7b.yaml")
    assert set(paper.serving.resources) <= set(types["gpu_worker"]["resources"])
    assert set(paper.policy.custom_resources_per_env_runner) <= set(
        types["cpu_worker"]["resources"])
    assert data["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values()
                                      if t is not types["head"])
    starts = data["head_start_ray_commands"] + data["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert "~/.ray/auth_token" in data["file_mounts"]


def test_cluster_launcher_passes_rays_own_schema():
    import json

    import jsonschema
    import ray.autoscaler

    schema_file = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(_yaml(CLUSTER / "cluster-launcher.yaml"), schema)


def test_runtime_env_is_valid_for_ray_and_holds_no_secret():
    from ray.runtime_env import RuntimeEnv

    data = _yaml(CLUSTER / "runtime_env.yaml")
    RuntimeEnv(**data)  # Ray's own validation of the fields
    assert data["working_dir"] == "."
    assert data["env_vars"]["HF_HUB_OFFLINE"] == "1"
    secret = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD)($|_)", re.IGNORECASE)
    assert not [k for k in data["env_vars"] if secret.search(k)]


def _submit(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | env
    return subprocess.run([str(CLUSTER / "submit.sh"), *args], capture_output=True, text=True,
                          env=full, timeout=30)


def test_submit_sh_builds_the_job_command_with_token_auth(tmp_path):
    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    r = _submit("--config", "experiments/quickstart.yaml", "--run-dir", "/shared/qs",
                "--set", "policy.iterations=1", "--token-file", str(token), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "auth token" in r.stderr and str(token) in r.stderr
    assert "not-a-real-token" not in r.stdout + r.stderr
    cmd = r.stdout.split()
    assert cmd[:3] == ["ray", "job", "submit"]
    assert cmd[cmd.index("--runtime-env") + 1] == "cluster/runtime_env.yaml"
    entry = cmd[cmd.index("--") + 1:]
    assert entry[:4] == ["python", "-m", "teamsrl.cli", "pipeline"]
    assert "--address" in entry and entry[entry.index("--address") + 1] == "auto"
    assert "run_dir=/shared/qs" in entry and "policy.iterations=1" in entry
    assert "--help" in _submit("--help").stdout


def test_submit_sh_refuses_bad_input_with_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cases = [
        ((), {}, "--config is required"),
        (("--config", "nope.yaml"), {}, "--config 'nope.yaml': file not found"),
        (("--config", "experiments/quickstart.yaml"), {"RAY_AUTH_MODE": "tokn"},
         "RAY_AUTH_MODE = 'tokn': expected token or disabled"),
        (("--config", "experiments/quickstart.yaml"), {"HOME": str(home)},
         "RAY_AUTH_MODE = token but no token"),
        (("--config", "experiments/quickstart.yaml"),
         {"RAY_AUTH_TOKEN_PATH": str(home / "missing")}, "expected a readable, non-empty"),
        (("--config", "experiments/quickstart.yaml", "--bogus"), {}, "unknown option '--bogus'"),
    ]
    for args, env, message in cases:
        r = _submit(*args, "--dry-run", **env)
        assert r.returncode == 2, (args, r.stdout)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
