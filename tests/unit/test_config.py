"""The configuration: defaults equal conf/bukt.yaml, overrides, and refusals."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bukt import config
from bukt.config import ConfigError, load, parse_size

CONF = Path(__file__).resolve().parents[2] / "conf" / "bukt.yaml"


def write(tmp_path, text):
    p = tmp_path / "bukt.yaml"
    p.write_text(text)
    return p


def flat_keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


# -- the shipped file ------------------------------------------------------------------

def test_shipped_file_equals_builtin_defaults():
    # but for data_dir, which a file names relative to itself: ./var beside it
    shipped = load(CONF, env={}).as_dict()
    assert shipped.pop("data_dir") == str(CONF.parent / "var")
    builtin = config.defaults().as_dict()
    assert builtin.pop("data_dir") == "./var"
    assert shipped == builtin


def test_a_relative_data_dir_is_the_files_and_a_variable_or_default_the_cwds(tmp_path):
    p = tmp_path / "conf" / "bukt.yaml"
    p.parent.mkdir()
    p.write_text("data_dir: ./data\n")
    elsewhere = str(tmp_path / "elsewhere")
    os.mkdir(elsewhere)
    code = ("import json, sys; from bukt import config; c = config.load(sys.argv[1], "
            "env={k: v for k, v in __import__('os').environ.items() if k == 'BUKT_DATA_DIR'}); "
            "print(json.dumps([c.data_dir, c.source('data_dir')]))")
    def run(*argv, **env):
        r = subprocess.run([sys.executable, "-c", code, *argv], cwd=elsewhere,
                           env=dict(os.environ, **env), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    assert run(str(p)) == [str(tmp_path / "conf" / "data"), str(p)]
    # the file given by a relative path is still the file's directory
    assert run(os.path.relpath(p, elsewhere))[0] == str(tmp_path / "conf" / "data")
    # an absolute one is kept
    p.write_text(f"data_dir: {tmp_path}/abs\n")
    assert run(str(p))[0] == f"{tmp_path}/abs"
    # a variable is the current directory's, as the built-in default is; both are told
    # apart from a default by source()
    assert run(str(p), BUKT_DATA_DIR="rel") == ["rel", "environment BUKT_DATA_DIR"]
    assert load(None, env={}).source("data_dir") is None


def test_shipped_file_names_every_key_and_no_other():
    raw = yaml.safe_load(CONF.read_text())
    assert list(flat_keys(raw)) == list(config.SCHEMA)


def test_shipped_file_writes_defaults_as_the_schema_does():
    raw = yaml.safe_load(CONF.read_text())
    for key, (default, _) in config.SCHEMA.items():
        node = raw
        for part in key.split("."):
            node = node[part]
        assert node == default, key


def test_every_key_in_shipped_file_has_a_comment_with_its_default():
    lines = CONF.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([a-z_]+):\s*(\S.*)?$", line)
        if not m or not m.group(3):
            continue                        # a section header
        j, comment = i - 1, []
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j])
            j -= 1
        text = " ".join(comment)
        assert comment, f"{m.group(2)} has no comment"
        assert "Default" in text, f"{m.group(2)}: the comment does not give the default"


def test_no_file_gives_defaults_and_values_are_canonical():
    cfg = load(env={})
    assert cfg.instance == "default"
    assert cfg.memory == 256 << 20
    assert cfg.data_dir == "./var"
    assert cfg.fsync == "everysec"
    assert cfg.segment.mode == 0o600
    assert cfg.limits.max_key == 250
    assert cfg.limits.max_value == 1 << 20
    assert cfg.limits.max_buckets == 64
    assert cfg.recovery.on_corrupt == "refuse"
    assert cfg.recovery.evict is False
    assert cfg.tcp.bind == "127.0.0.1:7071"
    assert cfg.tcp.workers == 0
    assert cfg.http.bind == "127.0.0.1:7070"
    assert cfg.auth.admin_token is None
    assert cfg.ratelimit.enabled is False
    assert cfg.shutdown_timeout == 10.0
    assert cfg.get("tcp.bind") == cfg["tcp"]["bind"]


def test_config_is_read_only_and_as_dict_is_a_copy():
    cfg = load(env={})
    with pytest.raises(AttributeError):
        cfg.fsync = "no"
    d = cfg.as_dict()
    d["tcp"]["bind"] = "x"
    assert cfg.tcp.bind == "127.0.0.1:7071"
    with pytest.raises(AttributeError, match="nosuch"):
        cfg.nosuch


# -- file and environment --------------------------------------------------------------

def test_file_overrides_some_keys_and_keeps_the_rest(tmp_path):
    p = write(tmp_path, "fsync: always\ntcp:\n  bind: '[::1]:9000'\nlimits:\n  max_value: 2MiB\n")
    cfg = load(p, env={})
    assert cfg.fsync == "always"
    assert cfg.tcp.bind == "[::1]:9000"
    assert cfg.limits.max_value == 2 << 20
    assert cfg.tcp.workers == 0


def test_empty_file_and_empty_section_keep_defaults(tmp_path):
    assert load(write(tmp_path, ""), env={}) == config.defaults()
    assert load(write(tmp_path, "tcp:\n"), env={}) == config.defaults()


def test_environment_overrides_file(tmp_path):
    p = write(tmp_path, "fsync: always\n")
    env = {"BUKT_FSYNC": "no", "BUKT_TCP__BIND": "0.0.0.0:1234",
           "BUKT_LIMITS__MAX_KEY": "512", "BUKT_MEMORY": "1GiB",
           "BUKT_RATELIMIT__ENABLED": "true", "BUKT_SEGMENT__MODE": "0660",
           "BUKT_AUTH__ADMIN_TOKEN": "t" * 32, "BUKT_COMPACTION__RATIO": "3.5",
           "BUKT_SHUTDOWN_TIMEOUT": "1500ms", "PATH": "/bin"}
    cfg = load(p, env=env)
    assert cfg.fsync == "no"
    assert cfg.tcp.bind == "0.0.0.0:1234"
    assert cfg.limits.max_key == 512
    assert cfg.memory == 1 << 30
    assert cfg.ratelimit.enabled is True
    assert cfg.segment.mode == 0o660
    assert cfg.auth.admin_token == "t" * 32
    assert cfg.compaction.ratio == 3.5
    assert cfg.shutdown_timeout == 1.5


def test_config_path_from_environment(tmp_path):
    p = write(tmp_path, "instance: other\n")
    assert load(env={"BUKT_CONFIG": str(p)}).instance == "other"


def test_empty_variable_sets_a_nullable_key_to_null(tmp_path):
    p = write(tmp_path, "auth:\n  admin_token: " + "a" * 20 + "\n")
    assert load(p, env={"BUKT_AUTH__ADMIN_TOKEN": ""}).auth.admin_token is None


# -- refusals: the message names the source, the key, the value and what is allowed ----

@pytest.mark.parametrize("text, needles", [
    ("fysnc: always\n", ["unknown key 'fysnc'", "fsync"]),
    ("tcp:\n  bnd: x\n", ["unknown key 'tcp.bnd'", "tcp.bind"]),
    ("fsync: sometimes\n", ["fsync", "'sometimes'", "always, everysec, no"]),
    ("memory: 64MB\n", ["memory", "'64MB'", "MiB"]),
    ("memory: -5\n", ["memory", "-5"]),
    ("limits:\n  max_key: 0\n", ["limits.max_key", "0", "from 1 to 65535"]),
    ("limits:\n  max_key: true\n", ["limits.max_key", "True", "integer"]),
    ("tcp:\n  bind: localhost\n", ["tcp.bind", "'localhost'", "HOST:PORT"]),
    ("tcp:\n  bind: 1.2.3.4:99999\n", ["tcp.bind", "99999"]),
    ("tcp: 5\n", ["tcp", "5", "section"]),
    ("fsync:\n  a: 1\n", ["fsync", "not a mapping"]),
    ("recovery:\n  on_corrupt: ignore\n", ["recovery.on_corrupt", "refuse, load_good"]),
    ("recovery:\n  evict: sometimes\n", ["recovery.evict", "'sometimes'"]),
    ("segment:\n  mode: 0755\n", ["segment.mode", "493", "no execute bit"]),
    ("auth:\n  admin_token: short\n", ["auth.admin_token", "'short'", "16-256"]),
    ("instance: a/b\n", ["instance", "'a/b'", "letters"]),
    ("log:\n  level: loud\n", ["log.level", "'loud'", "debug, info"]),
    ("ratelimit:\n  enabled: maybe\n", ["ratelimit.enabled", "'maybe'", "true or false"]),
    ("tcp:\n  idle_timeout: soon\n", ["tcp.idle_timeout", "'soon'", "duration"]),
    ("resp:\n  coalesce: 2s\n", ["resp.coalesce", "2s"]),
    ("- a\n- b\n", ["mapping of keys"]),
    ("fsync: [\n", ["not valid YAML"]),
    ("limits:\n  max_value: 8MiB\n", ["tcp.max_frame", "limits.max_value"]),
    ("limits:\n  ring_size: 1MiB\n", ["limits.ring_size", "twice limits.max_value"]),
])
def test_bad_file_is_refused_with_a_useful_message(tmp_path, text, needles):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(p, env={})
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, msg
    assert e.value.code == "config_error"


def test_bad_value_message_names_the_file(tmp_path):
    p = write(tmp_path, "fsync: sometimes\n")
    with pytest.raises(ConfigError, match=re.escape(str(p))):
        load(p, env={})


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.yaml", env={})


def test_a_json_file_reads_as_its_yaml_twin_without_importing_yaml(tmp_path):
    """`bukt serve` hands its children JSON (serve.effective.json) so that a child,
    the writer of a warm restart above all, starts without importing PyYAML."""
    doc = {"fsync": "always", "tcp": {"bind": "[::1]:9000"}, "segment": {"mode": 0o640},
           "limits": {"max_value": "2MiB"}, "auth": {"admin_token": None}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    assert load(tmp_path / "c.json", env={}) == load(tmp_path / "c.yaml", env={})
    probe = ("import sys, bukt.config as c; cfg = c.load(sys.argv[1], env={}); "
             "print(cfg.fsync, 'yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "c.json")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["always", "False"]


@pytest.mark.parametrize("text, needles", [
    ('{"fsync": ', ["not valid JSON"]),
    ('["a"]', ["mapping of keys", "list"]),
    ('{"fsync": "sometimes"}', ["fsync", "'sometimes'"]),
])
def test_a_bad_json_file_is_refused_naming_the_file(tmp_path, text, needles):
    p = tmp_path / "c.json"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(p, env={})
    for needle in needles + [str(p)]:
        assert needle in str(e.value), str(e.value)


def test_bad_variable_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="BUKT_FSYNC.*'sometimes'.*always, everysec, no"):
        load(env={"BUKT_FSYNC": "sometimes"})
    with pytest.raises(ConfigError, match="BUKT_TCP_BIND names no configuration key.*__"):
        load(env={"BUKT_TCP_BIND": "1.2.3.4:5"})


def test_admin_token_short_variable_is_an_alias():
    assert load(env={"BUKT_ADMIN_TOKEN": "s" * 20}).auth.admin_token == "s" * 20
    both = {"BUKT_ADMIN_TOKEN": "s" * 20, "BUKT_AUTH__ADMIN_TOKEN": "c" * 20}
    assert load(env=both).auth.admin_token == "c" * 20
    with pytest.raises(ConfigError, match="BUKT_ADMIN_TOKEN.*16-256"):
        load(env={"BUKT_ADMIN_TOKEN": "short"})


def test_non_key_variables_are_left_alone():
    assert load(env={"BUKT_DEBUG": "1", "BUKTX": "y", "HOME": "/"}) == config.defaults()


# -- sizes -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, n", [
    (4096, 4096), ("4096", 4096), ("0", 0), ("64KiB", 64 << 10), ("64MiB", 64 << 20),
    ("1GiB", 1 << 30), ("1gib", 1 << 30), ("2 TiB", 2 << 40), ("1.5GiB", 3 << 29),
    ("100B", 100), (" 8MiB ", 8 << 20),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["64MB", "1G", "1k", "", "MiB", "-1", -1, 1.5, True, None,
                                  "0.3B", "1e6"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_bind():
    assert config.parse_bind("127.0.0.1:7070") == ("127.0.0.1", 7070)
    assert config.parse_bind("[::1]:0") == ("::1", 0)
    assert config.parse_bind("localhost:80") == ("localhost", 80)
    with pytest.raises(ValueError):
        config.parse_bind("::1:80")


def test_real_environment_is_the_default_source(monkeypatch):
    monkeypatch.setenv("BUKT_FSYNC", "always")
    assert load().fsync == "always"
    assert os.environ["BUKT_FSYNC"] == "always"


def test_the_spins_are_durations_of_at_most_ten_milliseconds():
    from bukt.tcp.settings import TcpSettings
    assert load(env={}).gather_spin == pytest.approx(50e-6)
    assert load(env={"BUKT_GATHER_SPIN": "0"}).gather_spin == 0.0
    assert load(env={"BUKT_GATHER_SPIN": "2ms"}).gather_spin == pytest.approx(0.002)
    assert TcpSettings.from_config(load(env={})).busy_poll == pytest.approx(30e-6)
    assert TcpSettings.from_config(load(env={"BUKT_TCP__BUSY_POLL": "0"})).busy_poll == 0.0
    for key, env in (("gather_spin", "BUKT_GATHER_SPIN"), ("tcp.busy_poll", "BUKT_TCP__BUSY_POLL")):
        with pytest.raises(ConfigError) as e:
            load(env={env: "20ms"})
        assert key in str(e.value) and "at most 0.01 s" in str(e.value)


def test_tcp_nice_is_a_niceness_or_null():
    from bukt.tcp.settings import TcpSettings
    assert TcpSettings.from_config(load(env={})).nice is None
    assert TcpSettings.from_config(load(env={"BUKT_TCP__NICE": "-5"})).nice == -5
    assert TcpSettings.from_config(load(env={"BUKT_TCP__NICE": "19"})).nice == 19
    for bad in ("-21", "20", "low"):
        with pytest.raises(ConfigError) as e:
            load(env={"BUKT_TCP__NICE": bad})
        assert "tcp.nice" in str(e.value) and "from -20 to 19" in str(e.value)


def test_tcp_slice_is_zero_or_what_the_kernel_takes_and_round_yield_a_bool():
    from bukt.tcp.settings import TcpSettings
    default = TcpSettings.from_config(load(env={}))
    assert default.slice == pytest.approx(300e-6) and default.round_yield is True
    for text, seconds in (("0", 0.0), ("100us", 100e-6), ("1ms", 1e-3), ("100ms", 0.1)):
        got = TcpSettings.from_config(load(env={"BUKT_TCP__SLICE": text})).slice
        assert got == pytest.approx(seconds), text
    for bad in ("99us", "50us", "101ms", "1s", "fast"):
        with pytest.raises(ConfigError) as e:
            load(env={"BUKT_TCP__SLICE": bad})
        assert "tcp.slice" in str(e.value), bad
        if bad != "fast":
            assert "from 100us to 100ms" in str(e.value), bad
    assert TcpSettings.from_config(load(env={"BUKT_TCP__ROUND_YIELD": "off"})).round_yield is False
    with pytest.raises(ConfigError) as e:
        load(env={"BUKT_TCP__ROUND_YIELD": "sometimes"})
    assert "tcp.round_yield" in str(e.value)


def test_resp_coalesce_reaches_the_tcp_settings(tmp_path):
    from bukt.tcp.settings import TcpSettings
    assert TcpSettings().resp_coalesce == config.parse_duration(
        config.SCHEMA["resp.coalesce"][0])
    cfg = load(write(tmp_path, "resp:\n  coalesce: 500us\n"), env={})
    assert TcpSettings.from_config(cfg).resp_coalesce == pytest.approx(0.0005)
