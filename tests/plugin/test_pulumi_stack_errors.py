"""Every way the outputs can be wrong ends in one AnsibleParserError naming the config file and the fix."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from pulumi_stack_helpers import (
    PLUGIN_DIR,
    calls_of,
    hostvars,
    load_fixture,
    parse,
    write_config,
    write_outputs,
)


def parse_error(config: Path) -> AnsibleParserError:
    with pytest.raises(AnsibleParserError) as caught:
        parse(config)
    message = str(caught.value)
    assert str(config) in message, f"the error does not name the config file: {message}"
    return caught.value


def outputs_error(tmp_path: Path, outputs: object) -> AnsibleParserError:
    write_outputs(tmp_path, outputs)
    return parse_error(write_config(tmp_path, outputs_file="outputs.json"))


# --- which source ---------------------------------------------------------------------------------


def test_no_source(tmp_path):
    error = parse_error(write_config(tmp_path))
    assert "set exactly one of outputs_file, stack (with project_dir) or state_file, found none" in str(error)


def test_two_sources(tmp_path):
    error = parse_error(write_config(tmp_path, outputs_file="a.json", state_file="b.json"))
    assert "set exactly one of" in str(error)
    assert "found outputs_file and state_file" in str(error)


def test_stack_without_project_dir(tmp_path):
    error = parse_error(write_config(tmp_path, stack="dev"))
    assert "stack needs project_dir" in str(error)


def test_project_dir_without_stack(tmp_path):
    error = parse_error(write_config(tmp_path, outputs_file="a.json", project_dir="../pulumi"))
    assert "project_dir only goes with stack" in str(error)


# --- files ------------------------------------------------------------------------------------------


def test_outputs_file_missing(tmp_path):
    error = parse_error(write_config(tmp_path, outputs_file="nowhere/outputs.json"))
    assert f"outputs_file {tmp_path / 'nowhere' / 'outputs.json'} does not exist" in str(error)
    assert "pulumi stack output --json --show-secrets" in str(error)
    assert isinstance(error.__cause__, FileNotFoundError)


def test_outputs_file_is_a_folder(tmp_path):
    (tmp_path / "out").mkdir()
    error = parse_error(write_config(tmp_path, outputs_file="out"))
    assert "is a folder, not a JSON file" in str(error)


def test_outputs_file_malformed_json(tmp_path):
    (tmp_path / "outputs.json").write_text('{"rayops_contract": 1,\n  "nodes": [', encoding="utf-8")
    error = parse_error(write_config(tmp_path, outputs_file="outputs.json"))
    assert "is not valid JSON" in str(error)
    assert "line 2" in str(error)
    assert isinstance(error.__cause__, json.JSONDecodeError)


def test_state_file_missing(tmp_path):
    error = parse_error(write_config(tmp_path, state_file="dev-state.json"))
    assert "state_file" in str(error)
    assert "does not exist" in str(error)
    assert "pulumi stack export --show-secrets" in str(error)


def test_state_file_with_encrypted_secrets(tmp_path):
    state = load_fixture("state_export.json")
    envelope = state["deployment"]["resources"][0]["outputs"]["buckets"]
    del envelope["plaintext"]
    envelope["ciphertext"] = "v1:c2FsdA==:ZW5jcnlwdGVk"
    write_outputs(tmp_path, state, name="dev-state.json")

    error = parse_error(write_config(tmp_path, state_file="dev-state.json"))

    assert "the secret at outputs.buckets is encrypted (ciphertext)" in str(error)
    assert "use `stack:`" in str(error)
    assert "pulumi stack output --json --show-secrets > FILE" in str(error)


def test_state_file_without_a_stack_resource(tmp_path):
    state = load_fixture("state_export.json")
    state["deployment"]["resources"] = state["deployment"]["resources"][1:]
    write_outputs(tmp_path, state, name="dev-state.json")

    error = parse_error(write_config(tmp_path, state_file="dev-state.json"))

    assert "holds 0 resources of type pulumi:pulumi:Stack" in str(error)


def test_state_file_of_a_stack_never_deployed(tmp_path):
    state = load_fixture("state_export.json")
    del state["deployment"]["resources"][0]["outputs"]
    write_outputs(tmp_path, state, name="dev-state.json")

    error = parse_error(write_config(tmp_path, state_file="dev-state.json"))

    assert "has no outputs: run `pulumi up` first" in str(error)


def test_state_file_that_is_not_an_export(tmp_path):
    write_outputs(tmp_path, load_fixture("aws_public.json"), name="dev-state.json")

    error = parse_error(write_config(tmp_path, state_file="dev-state.json"))

    assert "no deployment.resources list" in str(error)


# --- the contract -----------------------------------------------------------------------------------


def test_outputs_not_an_object(tmp_path):
    error = outputs_error(tmp_path, [1, 2])
    assert "must be a JSON object, got list" in str(error)


def test_missing_rayops_contract(tmp_path):
    outputs = load_fixture("aws_public.json")
    del outputs["rayops_contract"]
    error = outputs_error(tmp_path, outputs)
    assert "break the rayops stack-output contract" in str(error)
    assert "'rayops_contract' is None" in str(error)
    assert type(error.__cause__).__name__ == "ContractError"


def test_wrong_rayops_contract(tmp_path):
    outputs = load_fixture("aws_public.json")
    outputs["rayops_contract"] = 2
    error = outputs_error(tmp_path, outputs)
    assert "'rayops_contract' is 2, this rayops reads version 1" in str(error)


def test_node_without_private_ip(tmp_path):
    outputs = load_fixture("aws_public.json")
    del outputs["nodes"][1]["private_ip"]
    error = outputs_error(tmp_path, outputs)
    assert "outputs.nodes[1]" in str(error)
    assert "'private_ip' is a required property" in str(error)


def test_node_with_null_private_ip(tmp_path):
    outputs = load_fixture("aws_public.json")
    outputs["nodes"][2]["private_ip"] = None
    error = outputs_error(tmp_path, outputs)
    assert "outputs.nodes[2].private_ip" in str(error)


def test_zero_heads(tmp_path):
    outputs = load_fixture("aws_public.json")
    outputs["nodes"][0]["role"] = "worker"
    error = outputs_error(tmp_path, outputs)
    assert "exactly one node with role 'head', found 0" in str(error)


def test_two_heads(tmp_path):
    outputs = load_fixture("aws_public.json")
    outputs["nodes"][1]["role"] = "head"
    error = outputs_error(tmp_path, outputs)
    assert "exactly one node with role 'head', found 2 (ray-head, ray-worker-1)" in str(error)


def test_duplicate_names(tmp_path):
    outputs = load_fixture("aws_public.json")
    outputs["nodes"][2]["name"] = "ray-worker-1"
    error = outputs_error(tmp_path, outputs)
    assert "name 'ray-worker-1' appears more than once" in str(error)


def test_known_hosts_file_must_be_a_path(tmp_path):
    outputs = load_fixture("local.json")
    outputs["ssh_known_hosts_file"] = ["a", "b"]
    error = outputs_error(tmp_path, outputs)
    assert "outputs.ssh_known_hosts_file: ['a', 'b'] is not of type 'string'" in str(error)


def test_rayops_not_importable(tmp_path, monkeypatch):
    """A controller without the rayops package (no `make setup`) gets told so, not a traceback."""
    monkeypatch.setitem(sys.modules, "rayops.contract", None)  # makes `from rayops.contract import` fail
    spec = importlib.util.spec_from_file_location(
        "pulumi_stack_without_rayops", PLUGIN_DIR / "pulumi_stack.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    config = write_config(tmp_path, outputs_file="outputs.json")

    with pytest.raises(AnsibleParserError) as caught:
        module.InventoryModule().parse(InventoryData(), DataLoader(), str(config))

    assert str(config) in str(caught.value)
    assert "the rayops package cannot be imported" in str(caught.value)
    assert "run `make setup`" in str(caught.value)


# --- the Pulumi CLI (a stand-in script on PATH: the real CLI cannot be installed here) ---------------


def stack_config(tmp_path: Path, **options: object) -> Path:
    (tmp_path / "pulumi").mkdir(exist_ok=True)
    (tmp_path / "pulumi" / "Pulumi.yaml").write_text("name: rayops\nruntime: python\n", encoding="utf-8")
    return write_config(tmp_path / "inventory", stack="dev", project_dir="../pulumi", **options)


def test_stack_through_the_cli(tmp_path, fake_pulumi):
    calls = fake_pulumi(stdout=json.dumps(load_fixture("aws_public.json")))

    inventory = parse(stack_config(tmp_path))

    assert calls_of(calls) == [
        {
            "argv": ["stack", "output", "--json", "--show-secrets", "--non-interactive", "--stack", "dev"],
            "cwd": str(tmp_path / "pulumi"),
        }
    ]
    assert hostvars(inventory, "ray-worker-1")["ansible_host"] == "203.0.113.11"
    assert hostvars(inventory, "ray-worker-1")["ray_head_ip"] == "10.0.1.10"


def test_stack_cache_hit_skips_the_cli_and_miss_calls_it(tmp_path, fake_pulumi):
    calls = fake_pulumi(stdout=json.dumps(load_fixture("aws_public.json")))
    config = stack_config(tmp_path, cache=True, cache_plugin="jsonfile", cache_connection=str(tmp_path / "c"))

    parse(config)
    assert len(calls_of(calls)) == 1  # miss
    parse(config)
    parse(config)
    assert len(calls_of(calls)) == 1  # hits
    parse(config, cache=False)
    assert len(calls_of(calls)) == 2  # refresh asked for: the CLI again


def test_cli_missing(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    error = parse_error(stack_config(tmp_path))

    assert "the Pulumi CLI (`pulumi`) is not on PATH" in str(error)
    assert "https://www.pulumi.com/docs/install/" in str(error)
    assert "`outputs_file:`" in str(error)


# The Pulumi CLI's own wording (it prints "error: " + the error and exits 255), taken from its source,
# github.com/pulumi/pulumi:
# - login: pkg/backend/backenderr/backenderr.go, MissingEnvVarForNonInteractiveError.Error() (returned by
#   Login in pkg/backend/httpstate/backend.go when not interactive and PULUMI_ACCESS_TOKEN is unset);
# - stack: pkg/cmd/pulumi/stack/io.go, RequireStack: fmt.Errorf("no stack named '%s' found", stackName);
# - passphrase: pkg/secrets/passphrase/manager.go, readPassphrase, wrapped by
#   NewPromptingPassphraseSecretsManagerFromState ("constructing secrets manager: %w");
# - project: sdk/go/common/workspace/paths.go, DetectProjectPathFrom (wraps ErrProjectNotFound).
# Only the last case ("other") is made up: it stands for any message the plugin does not recognise.
REAL_CLI_ERRORS = {
    "not-logged-in": "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions\n",
    "stack-not-found": "error: no stack named 'dev' found\n",
    "passphrase": (
        "error: constructing secrets manager: passphrase must be set with PULUMI_CONFIG_PASSPHRASE or "
        "PULUMI_CONFIG_PASSPHRASE_FILE environment variables\n"
    ),
    "no-project": (
        "error: no Pulumi.yaml project file found (searching upwards from /x). If you have not created a "
        "project yet, use `pulumi new` to do so: no project file found\n"
    ),
}


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        (REAL_CLI_ERRORS["not-logged-in"], "the Pulumi CLI is not logged in: run `pulumi login`"),
        (REAL_CLI_ERRORS["stack-not-found"], "Pulumi has no stack 'dev' for the project in"),
        (REAL_CLI_ERRORS["passphrase"], "set PULUMI_CONFIG_PASSPHRASE"),
        (REAL_CLI_ERRORS["no-project"], "there is no Pulumi project (Pulumi.yaml) in"),
        (
            "warning: something\nerror: the backend exploded\n",
            "failed for stack 'dev' in {project} with exit code 255: error: the backend exploded",
        ),
    ],
    ids=["not-logged-in", "stack-not-found", "passphrase", "no-project", "other"],
)
def test_cli_failures(tmp_path, fake_pulumi, stderr, expected):
    fake_pulumi(stderr=stderr, exit_code=255)

    error = parse_error(stack_config(tmp_path))

    assert expected.format(project=tmp_path / "pulumi") in str(error)


def test_cli_output_that_is_not_json_is_not_echoed(tmp_path, fake_pulumi):
    fake_pulumi(stdout="Current stack outputs (1):\n    db_password  hunter2-secret\n")

    error = parse_error(stack_config(tmp_path))

    assert "printed something that is not JSON" in str(error)
    assert "hunter2" not in str(error)


def test_cli_output_breaking_the_contract(tmp_path, fake_pulumi):
    outputs = copy.deepcopy(load_fixture("aws_public.json"))
    outputs["nodes"] = []
    fake_pulumi(stdout=json.dumps(outputs))

    error = parse_error(stack_config(tmp_path))

    assert (
        f"the outputs of stack 'dev' in {tmp_path / 'pulumi'} break the rayops stack-output contract"
        in str(error)
    )


def test_cli_timeout(tmp_path, fake_pulumi):
    fake_pulumi(stdout="{}", sleep=10)

    error = parse_error(stack_config(tmp_path, pulumi_timeout=1))

    assert "did not answer within 1 s" in str(error)
    assert "raise pulumi_timeout" in str(error)


def test_project_dir_missing(tmp_path, fake_pulumi):
    calls = fake_pulumi(stdout="{}")
    config = write_config(tmp_path / "inventory", stack="dev", project_dir="../no-such-dir")

    error = parse_error(config)

    assert f"project_dir {tmp_path / 'no-such-dir'} is not a folder" in str(error)
    assert calls_of(calls) == []


def test_cli_inherits_the_environment(tmp_path, fake_pulumi, monkeypatch):
    """PULUMI_ACCESS_TOKEN / PULUMI_CONFIG_PASSPHRASE reach the CLI from the user's environment."""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-env")
    script_calls = fake_pulumi(stdout=json.dumps(load_fixture("aws_public.json")))
    script = Path(os.environ["PATH"].split(os.pathsep)[0]) / "pulumi"
    script.write_text(
        script.read_text(encoding="utf-8").replace(
            '"cwd": os.getcwd()',
            '"cwd": os.getcwd(), "passphrase": os.environ.get("PULUMI_CONFIG_PASSPHRASE")',
        ),
        encoding="utf-8",
    )

    parse(stack_config(tmp_path))

    assert calls_of(script_calls)[0]["passphrase"] == "from-env"


# --- the config file's own options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [
        ("use_privat_ip", " (did you mean 'use_private_ip'?)"),
        ("jump_via_hed", " (did you mean 'jump_via_head'?)"),
        ("colour", ""),
    ],
)
def test_a_misspelt_option_is_refused_with_the_closest_name(tmp_path, option, suggestion):
    write_outputs(tmp_path, load_fixture("local.json"))
    error = parse_error(write_config(tmp_path, outputs_file="outputs.json", **{option: True}))
    message = str(error)
    assert (
        f"{option!r} is not an option of this plugin{suggestion}: fix or remove it; the options are "
        in message
    )
    assert "use_private_ip" in message and "(ansible-doc -t inventory pulumi_stack)" in message
