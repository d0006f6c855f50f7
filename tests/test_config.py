"""Configuration as an operator sets it: a file only, the environment only, and both, read
through `vigo-processor config` (a subprocess, exactly as run) and through `load_settings`.
A bad value from either source is one line naming the key, a non-zero exit, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from processor.config import (
    ConfigError,
    Settings,
    effective_config,
    load_settings,
    mask_secrets,
    unapplied_warnings,
)
from projections.liveness import StaleAfter

PROCESSOR = Path(sys.executable).parent / "vigo-processor"

BOTH_EVENTS = {
    "convergence.threshold": {"threshold": 80},
    "envoy.stale": {"digest_over": 5},
}


def environment(**variables: str) -> dict[str, str]:
    """The test process's environment without any VIGO_ variable, plus `variables`."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("VIGO_")}
    return {**clean, **variables}


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "vigo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_config(
    tmp_path: Path, config: dict[str, Any] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`vigo-processor config [--config FILE]` with exactly the given VIGO_ variables."""
    args = [str(PROCESSOR), "config"]
    if config is not None:
        args += ["--config", str(write_config(tmp_path, config))]
    return subprocess.run(
        args, env=environment(**env), capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def printed(tmp_path: Path, config: dict[str, Any] | None = None, **env: str) -> dict[str, Any]:
    done = run_config(tmp_path, config, **env)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    doc: dict[str, Any] = orjson.loads(done.stdout)
    return doc


# -- file only, environment only, both -------------------------------------------------------


def test_file_only_durations_are_printed_in_seconds(tmp_path: Path) -> None:
    doc = printed(tmp_path, {"checkin": {"interval": "5m", "stale_after": 3}})
    assert doc["checkin"] == {"interval": 300, "stale_after": {"intervals": 3}}
    doc = printed(tmp_path, {"checkin": {"interval": 90, "stale_after": "20m"}})
    assert doc["checkin"] == {"interval": 90, "stale_after": {"seconds": 1200}}


def test_environment_only_stale_after_3_means_3_intervals_as_in_the_file(tmp_path: Path) -> None:
    """Environment values are text: "3" must not become 3 seconds."""
    doc = printed(tmp_path, VIGO_CHECKIN__STALE_AFTER="3", VIGO_CHECKIN__INTERVAL="15m")
    assert doc["checkin"] == {"interval": 900, "stale_after": {"intervals": 3}}
    assert printed(tmp_path, {"checkin": {"stale_after": 3}})["checkin"] == doc["checkin"] | {
        "interval": 300
    }
    doc = printed(tmp_path, VIGO_CHECKIN__STALE_AFTER="20m")
    assert doc["checkin"]["stale_after"] == {"seconds": 1200}
    doc = printed(tmp_path, VIGO_CHECKIN__STALE_AFTER="2.5")
    assert doc["checkin"]["stale_after"] == {"intervals": 2.5}


def test_lifecycle_durations_from_the_file_the_environment_and_the_defaults(
    tmp_path: Path,
) -> None:
    """SPEC 10.3: `lifecycle.deactivate_after` and `purge_after` are durations (printed in
    seconds), 7d and 30d by default, `null` (also as the text of a variable) = never; they
    reach the rules in milliseconds."""
    assert printed(tmp_path)["lifecycle"] == {"deactivate_after": 604_800, "purge_after": 2_592_000}
    config = {"lifecycle": {"deactivate_after": "36h", "purge_after": None}}
    assert printed(tmp_path, config)["lifecycle"] == {
        "deactivate_after": 129_600,
        "purge_after": None,
    }
    doc = printed(
        tmp_path,
        config,
        VIGO_LIFECYCLE__DEACTIVATE_AFTER="null",
        VIGO_LIFECYCLE__PURGE_AFTER="90s",
    )
    assert doc["lifecycle"] == {"deactivate_after": None, "purge_after": 90}
    # What `config` prints reads back as the same configuration.
    assert printed(tmp_path, doc)["lifecycle"] == doc["lifecycle"]
    settings = load_settings(environ={"VIGO_LIFECYCLE__DEACTIVATE_AFTER": "5"})
    assert (settings.lifecycle.deactivate_after_ms, settings.lifecycle.purge_after_ms) == (
        5000,
        30 * 86_400_000,
    )


def test_environment_only_sets_event_keys_maps_and_lists(tmp_path: Path) -> None:
    doc = printed(
        tmp_path,
        VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__THRESHOLD="95",
        VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS='{"env=prod": 97}',
        VIGO_FLEET__GROUP_BY='["env"]',
        VIGO_SMTP__TO='["ops@example.com", "oncall@example.com"]',
        VIGO_KAFKA__PARTITIONS="16",
        VIGO_SMTP__STARTTLS="true",
    )
    assert doc["smtp"]["events"] == {
        "convergence.threshold": {"threshold": 95, "groups": {"env=prod": 97}},
        # Absent from the file means both events: one event's key keeps the other.
        "envoy.stale": {"digest_over": 10, "digest_window": 60},
    }
    assert doc["smtp"]["to"] == ["ops@example.com", "oncall@example.com"]
    assert (doc["kafka"]["partitions"], doc["smtp"]["starttls"]) == (16, True)


def test_both_environment_wins_per_key_and_keeps_the_files_other_events(tmp_path: Path) -> None:
    config = {
        "kafka": {"partitions": 4, "topic_prefix": "prod."},
        "smtp": {"host": "mail.file", "port": 2525, "events": BOTH_EVENTS},
    }
    doc = printed(
        tmp_path,
        config,
        VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__THRESHOLD="95",
        VIGO_SMTP__HOST="mail.env",
        VIGO_KAFKA__PARTITIONS="12",
    )
    assert doc["smtp"]["events"] == {
        "convergence.threshold": {"threshold": 95, "groups": {}},
        "envoy.stale": {"digest_over": 5, "digest_window": 60},
    }
    assert (doc["smtp"]["host"], doc["smtp"]["port"]) == ("mail.env", 2525)
    assert (doc["kafka"]["partitions"], doc["kafka"]["topic_prefix"]) == (12, "prod.")


def test_a_json_value_replaces_its_key_and_a_deeper_variable_wins_over_it(
    tmp_path: Path,
) -> None:
    config = {"smtp": {"events": BOTH_EVENTS}}
    doc = printed(tmp_path, config, VIGO_SMTP__EVENTS='{"envoy.stale": {}}')
    assert doc["smtp"]["events"] == {"envoy.stale": {"digest_over": 10, "digest_window": 60}}
    doc = printed(
        tmp_path,
        config,
        VIGO_SMTP='{"host": "a.example", "port": 587, "events": {}}',
        VIGO_SMTP__HOST="b.example",
    )
    assert (doc["smtp"]["host"], doc["smtp"]["port"], doc["smtp"]["events"]) == (
        "b.example",
        587,
        {},
    )


def test_other_tools_variables_are_not_configuration(tmp_path: Path) -> None:
    doc = printed(
        tmp_path,
        VIGO_URL="http://127.0.0.1:6066",
        VIGO_TOKEN="abc",
        VIGO_TEST_KAFKA="127.0.0.1:9092",
        VIGO_PORT="tcp://10.0.0.1:6066",  # what Kubernetes sets for a service named vigo
    )
    assert doc == printed(tmp_path)


def test_vigo_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"kafka": {"partitions": 3}})
    done = subprocess.run(
        [str(PROCESSOR), "config"],
        env=environment(VIGO_CONFIG=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["kafka"]["partitions"] == 3


# -- what `config` prints ----------------------------------------------------------------------


def test_config_never_prints_a_secret_and_touches_no_broker(tmp_path: Path) -> None:
    smtp_secret, kafka_secret = "smtp-hunter2-secret", "kafka-hunter3-secret"
    (tmp_path / "smtp.pw").write_text(smtp_secret + "\n")
    (tmp_path / "kafka.pw").write_text(kafka_secret + "\n")
    config = {
        # Nothing listens on port 1: connecting would fail or hang.
        "kafka": {
            "bootstrap_servers": "127.0.0.1:1",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "vigo",
            "sasl_password_file": str(tmp_path / "kafka.pw"),
        },
        "smtp": {"username": "mailer", "password_file": str(tmp_path / "smtp.pw")},
    }
    done = run_config(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert smtp_secret not in done.stdout + done.stderr
    assert kafka_secret not in done.stdout + done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["smtp"]["password_file"] == str(tmp_path / "smtp.pw")
    assert doc["kafka"]["sasl_password_file"] == str(tmp_path / "kafka.pw")
    assert doc["smtp"]["username"] == "mailer"


def test_any_password_key_is_masked() -> None:
    """A secret given inline (a key named like one, not `*_file`) is never printed."""
    masked = mask_secrets(
        {"smtp": {"password": "x", "password_file": "/p"}, "web": {"auth_token": "t"}}
    )
    assert masked == {
        "smtp": {"password": "***", "password_file": "/p"},
        "web": {"auth_token": "***"},
    }
    doc = effective_config(load_settings(environ={}))
    assert mask_secrets(doc) == doc  # nothing secret in the defaults


def test_config_output_reads_back_as_the_same_configuration(tmp_path: Path) -> None:
    first = printed(
        tmp_path,
        {"checkin": {"interval": "10m", "stale_after": "20m"}, "smtp": {"events": BOTH_EVENTS}},
        VIGO_SMTP__TO='["a@example.com"]',
    )
    (tmp_path / "again").mkdir()
    assert printed(tmp_path / "again", first) == first


def test_config_is_what_the_worker_runs_with() -> None:
    env = {"VIGO_CHECKIN__STALE_AFTER": "3", "VIGO_CHECKIN__INTERVAL": "15m"}
    settings = load_settings(environ=env)
    assert settings.checkin.interval_s == 900
    assert settings.checkin.stale_policy == StaleAfter(intervals=3.0)
    assert settings.checkin.stale_policy.after_ms(settings.checkin.interval_s) == 2_700_000


def test_config_refuses_unexpected_arguments(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(PROCESSOR), "config", "--jsonn"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "unexpected argument '--jsonn'" in done.stderr


# -- load_settings, the same rules in-process ---------------------------------------------------


def test_load_settings_file_environment_and_both(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"checkin": {"stale_after": 3}, "smtp": {"events": BOTH_EVENTS}})
    from_file = load_settings(path, environ={})
    from_env = load_settings(environ={"VIGO_CHECKIN__STALE_AFTER": "3"})
    assert from_file.checkin.stale_after == from_env.checkin.stale_after == StaleAfter(3.0)
    both = load_settings(
        path, environ={"VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__THRESHOLD": "95"}
    )
    assert both.threshold == 95
    assert both.smtp.events.envoy_stale is not None
    assert both.smtp.events.envoy_stale.digest_over == 5


def test_load_settings_defaults_without_file_or_environment() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.threshold == 90
    assert settings.smtp.events.envoy_stale is not None


def test_runs_intentional_changes_from_file_environment_and_default(tmp_path: Path) -> None:
    assert load_settings(environ={}).runs.intentional_changes is True
    path = write_config(tmp_path, {"runs": {"intentional_changes": False}})
    assert load_settings(path, environ={}).runs.intentional_changes is False
    from_env = load_settings(environ={"VIGO_RUNS__INTENTIONAL_CHANGES": "false"})
    assert from_env.runs.intentional_changes is False
    # The environment wins over the file, per key.
    both = load_settings(path, environ={"VIGO_RUNS__INTENTIONAL_CHANGES": "true"})
    assert both.runs.intentional_changes is True


def test_recovered_event_from_file_environment_and_both(tmp_path: Path) -> None:
    """Listed, it mails (SPEC 10.4); not listed (the default), it does not."""
    assert load_settings(environ={}).smtp.events.convergence_recovered is None
    listed = {"convergence.threshold": {"threshold": 80}, "convergence.recovered": {}}
    path = write_config(tmp_path, {"smtp": {"events": listed}})
    assert load_settings(path, environ={}).smtp.events.convergence_recovered is not None
    from_env = load_settings(
        environ={
            "VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD": '{"threshold": 80}',
            "VIGO_SMTP__EVENTS__CONVERGENCE_RECOVERED": "{}",
        }
    )
    assert from_env.smtp.events.convergence_recovered is not None
    only_threshold = write_config(tmp_path, {"smtp": {"events": {"convergence.threshold": {}}}})
    both = load_settings(only_threshold, environ={"VIGO_SMTP__EVENTS__CONVERGENCE_RECOVERED": "{}"})
    assert both.smtp.events.convergence_recovered is not None
    assert both.smtp.events.convergence_threshold is not None


def test_groups_from_file_environment_and_both(tmp_path: Path) -> None:
    """SPEC 10.2: `fleet.group_by`, `fleet.max_group_values` and per-group thresholds."""
    default = load_settings(environ={})
    assert (default.fleet.group_by, default.fleet.max_group_values) == ([], 200)
    assert default.group_thresholds == {}
    assert unapplied_warnings(default) == []
    config = {
        "fleet": {"group_by": ["env", "role"], "max_group_values": 50},
        "smtp": {"events": {"convergence.threshold": {"groups": {"env=prod": 95}}}},
    }
    path = write_config(tmp_path, config)
    from_file = load_settings(path, environ={})
    assert from_file.fleet.group_by == ["env", "role"]
    assert from_file.fleet.max_group_values == 50
    assert from_file.group_thresholds == {"env=prod": 95}
    assert from_file.threshold == 90  # the fleet threshold is untouched
    assert unapplied_warnings(from_file) == []
    from_env = load_settings(
        environ={
            "VIGO_FLEET__GROUP_BY": '["env","role"]',
            "VIGO_FLEET__MAX_GROUP_VALUES": "50",
            "VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS": '{"env=prod": 95}',
        }
    )
    assert (from_env.fleet, from_env.group_thresholds) == (from_file.fleet, {"env=prod": 95})
    both = load_settings(
        path,
        environ={
            "VIGO_FLEET__GROUP_BY": '["role"]',
            "VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS": '{"role=web=1": 80}',
        },
    )
    assert (both.fleet.group_by, both.fleet.max_group_values) == (["role"], 50)
    assert both.group_thresholds == {"role=web=1": 80}  # the value is "web=1"
    doc = printed(
        tmp_path,
        config,
        VIGO_FLEET__GROUP_BY='["env","role"]',
        VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS='{"role=db": 70}',
    )
    assert doc["fleet"] == {"group_by": ["env", "role"], "max_group_values": 50}
    assert doc["smtp"]["events"]["convergence.threshold"]["groups"] == {"role=db": 70}


# -- bad values: one line naming the key ------------------------------------------------------

BAD_VALUES: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = [
    ("smtp.to", None, {"VIGO_SMTP__TO": "a@b"}),
    ("smtp.to", {"smtp": {"to": "a@b"}}, {}),
    ("kafka.partitions", None, {"VIGO_KAFKA__PARTITIONS": "-1"}),
    ("kafka.partitions", {"kafka": {"partitions": -1}}, {}),
    ("kafka.partitions", None, {"VIGO_KAFKA__PARTITIONS": "eight"}),
    ("smtp.hostt", None, {"VIGO_SMTP__HOSTT": "x"}),
    ("smtp.hostt", {"smtp": {"hostt": "x"}}, {}),
    ("smpt", None, {"VIGO_SMPT__HOST": "x"}),
    ("smpt", {"smpt": {"host": "x"}}, {}),
    ("checkin.interval", None, {"VIGO_CHECKIN__INTERVAL": "5 minutes"}),
    ("checkin.interval", {"checkin": {"interval": float("inf")}}, {}),
    ("checkin.interval", {"checkin": {"interval": "1500ms"}}, {}),
    ("checkin.stale_after", {"checkin": {"stale_after": "20 parsecs"}}, {}),
    ("checkin.stale_after", {"checkin": {"stale_after": [3]}}, {}),
    ("checkin.stale_after", None, {"VIGO_CHECKIN__STALE_AFTER": "0"}),
    ("checkin.stale_after", None, {"VIGO_CHECKIN__STALE_AFTER": "-2"}),
    (
        "smtp.events.convergence.threshold.threshold",
        None,
        {"VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__THRESHOLD": "101"},
    ),
    (
        "smtp.events.convergence.threshold.groups",
        None,
        {"VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS": "env=prod: 95"},
    ),
    (
        "smtp.events.convergence.threshold.groups",
        None,
        {"VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS": '{"prod": 95}'},
    ),
    (
        "smtp.events.convergence.threshold.groups.env=prod",
        {"fleet": {"group_by": ["env"]}},
        {"VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS": '{"env=prod": 101}'},
    ),
    (
        "smtp.events.convergence.threshold.groups",
        None,
        {"VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__GROUPS": '{"env=prod": 95}'},
    ),
    (
        "smtp.events.convergence.threshold.groups",
        {
            "fleet": {"group_by": ["role"]},
            "smtp": {"events": {"convergence.threshold": {"groups": {"env=prod": 95}}}},
        },
        {},
    ),
    ("fleet.group_by", None, {"VIGO_FLEET__GROUP_BY": "env"}),
    ("fleet.group_by", None, {"VIGO_FLEET__GROUP_BY": '["a","b","c","d","e"]'}),
    ("fleet.group_by", {"fleet": {"group_by": ["env", "env"]}}, {}),
    ("fleet.group_by", {"fleet": {"group_by": ["env=prod"]}}, {}),
    ("fleet.group_by.0", {"fleet": {"group_by": [3]}}, {}),
    ("fleet.max_group_values", None, {"VIGO_FLEET__MAX_GROUP_VALUES": "0"}),
    ("fleet.max_group_values", {"fleet": {"max_group_values": "many"}}, {}),
    ("fleet.group_byy", {"fleet": {"group_byy": ["env"]}}, {}),
    ("smtp.events", {"smtp": {"events": {"mail.storm": {}}}}, {}),
    # A recovery needs the threshold alert it ends (SPEC 10.4).
    ("smtp.events", {"smtp": {"events": {"convergence.recovered": {}}}}, {}),
    ("smtp.events", None, {"VIGO_SMTP__EVENTS": '{"convergence.recovered": {}}'}),
    (
        "smtp.events.convergence.recovered.extra",
        {"smtp": {"events": {"convergence.threshold": {}, "convergence.recovered": {"extra": 1}}}},
        {},
    ),
    ("smtp.events.mail_storm", None, {"VIGO_SMTP__EVENTS__MAIL_STORM__X": "1"}),
    ("smtp.password_file", {"smtp": {"password_file": "/nonexistent/pw"}}, {}),
    ("web.auth_token_file", {"web": {"auth_token_file": "/nonexistent/token"}}, {}),
    ("web.auth_token_file", None, {"VIGO_WEB__AUTH_TOKEN_FILE": "/dev/null"}),
    ("smtp", None, {"VIGO_SMTP__STARTTLS": "true", "VIGO_SMTP__TLS": "true"}),
    ("smtp.to", None, {"VIGO_SMTP__TO__FIRST": "x"}),
    ("runs.intentional_changes", None, {"VIGO_RUNS__INTENTIONAL_CHANGES": "maybe"}),
    ("runs.intentional_changes", {"runs": {"intentional_changes": "sometimes"}}, {}),
    ("lifecycle.deactivate_after", None, {"VIGO_LIFECYCLE__DEACTIVATE_AFTER": "a week"}),
    ("lifecycle.deactivate_after", {"lifecycle": {"deactivate_after": "0s"}}, {}),
    ("lifecycle.deactivate_after", {"lifecycle": {"deactivate_after": [7]}}, {}),
    ("lifecycle.purge_after", None, {"VIGO_LIFECYCLE__PURGE_AFTER": "-30d"}),
    ("lifecycle.purge_after", {"lifecycle": {"purge_after": "1500ms"}}, {}),
    ("lifecycle.purge_after", {"lifecycle": {"purge_after": True}}, {}),
    ("lifecycle.purge_afterr", {"lifecycle": {"purge_afterr": "1d"}}, {}),
]


@pytest.mark.parametrize(("key", "config", "env"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_key(
    tmp_path: Path, key: str, config: dict[str, Any] | None, env: dict[str, str]
) -> None:
    done = run_config(tmp_path, config, **env)
    assert done.returncode != 0
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"vigo-processor: config {key}: "), lines[0]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config or {}))
    with pytest.raises(ConfigError, match=rf"^config {key}: "):
        load_settings(path, environ=env)


def test_the_variable_that_set_a_bad_key_is_named(tmp_path: Path) -> None:
    config = {"kafka": {"partitions": 4}}
    done = run_config(tmp_path, config, VIGO_KAFKA__PARTITIONS="0")
    assert done.stderr.endswith("(from VIGO_KAFKA__PARTITIONS)\n"), done.stderr
    done = run_config(tmp_path, {"kafka": {"partitions": 0}}, VIGO_SMTP__HOST="mail")
    assert "VIGO_" not in done.stderr  # the file's value: no variable to blame


def test_a_bad_value_is_not_echoed(tmp_path: Path) -> None:
    """The value may be a secret pasted into the wrong variable: never repeat it."""
    done = run_config(tmp_path, VIGO_SMTP__TO="hunter2-not-json")
    assert done.returncode != 0
    assert "hunter2" not in done.stderr
    assert "VIGO_SMTP__TO must be JSON" in done.stderr


def test_a_bad_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "vigo.yaml"
    for content, expected in [
        (b"kafka: [", "not valid YAML"),
        (b"- a\n- b\n", "the top level must be a mapping"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
    ]:
        path.write_bytes(content)
        done = subprocess.run(
            [str(PROCESSOR), "config", "--config", str(path)],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert expected in done.stderr


def test_digest_window_is_a_duration_and_digest_over_is_capped(tmp_path: Path) -> None:
    env = "VIGO_SMTP__EVENTS__ENVOY_STALE__DIGEST_WINDOW"
    settings = load_settings(environ={env: "2m"})
    assert settings.smtp.events.envoy_stale is not None
    assert settings.smtp.events.envoy_stale.digest_window_ms == 120_000
    with pytest.raises(
        ConfigError, match=rf"^config smtp.events.envoy.stale.digest_window: .*{env}"
    ):
        load_settings(environ={env: "soon"})
    with pytest.raises(ConfigError, match=r"^config smtp.events.envoy.stale.digest_over: .* 200"):
        load_settings(environ={"VIGO_SMTP__EVENTS__ENVOY_STALE__DIGEST_OVER": "1000"})


def test_checkpoints_and_the_rocksdb_budget_from_the_file_and_the_environment(
    tmp_path: Path,
) -> None:
    """SPEC 11.5: `processor.commit_interval` (1s) and `processor.rocksdb.memory_mib` (256)
    from their defaults, the file, and the environment over the file; a budget below
    16 MiB fails at start naming the key."""
    defaults = load_settings(environ={})
    assert (defaults.processor.commit_interval, defaults.processor.rocksdb.memory_mib) == (
        1000,
        256,
    )
    path = tmp_path / "vigo.yaml"
    path.write_text(
        yaml.safe_dump({"processor": {"commit_interval": "2s", "rocksdb": {"memory_mib": 64}}})
    )
    from_file = load_settings(path, environ={})
    assert (from_file.processor.commit_interval, from_file.processor.rocksdb.memory_mib) == (
        2000,
        64,
    )
    both = load_settings(path, environ={"VIGO_PROCESSOR__ROCKSDB__MEMORY_MIB": "512"})
    assert (both.processor.commit_interval, both.processor.rocksdb.memory_mib) == (2000, 512)
    with pytest.raises(ConfigError, match=r"^config processor\.rocksdb\.memory_mib: "):
        load_settings(path, environ={"VIGO_PROCESSOR__ROCKSDB__MEMORY_MIB": "8"})
