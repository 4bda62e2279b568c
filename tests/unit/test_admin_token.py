"""The admin token is found the same way by every face (bukt.tokens.admin_token): the
configured one, the environment's, or data_dir/admin.token, which the service writes."""
import pytest

from bukt.http.auth import resolve_admin_token
from bukt.http.settings import HttpSettings
from bukt.tcp.settings import TcpSettings


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch):
    monkeypatch.delenv("BUKT_ADMIN_TOKEN", raising=False)


def test_both_faces_read_the_token_file_the_service_wrote(tmp_path):
    http = HttpSettings.from_config({"data_dir": str(tmp_path)})
    token, _ = resolve_admin_token(http)                     # generated at first start
    assert TcpSettings.from_config({"data_dir": str(tmp_path)}).find_admin_token() == token


def test_an_empty_token_file_is_refused_by_both_faces(tmp_path):
    """Not an HTTP error and, on TCP, a silent start without any admin session."""
    (tmp_path / "admin.token").write_text("\n")
    (tmp_path / "admin.token").chmod(0o600)
    with pytest.raises(ValueError, match="empty"):
        resolve_admin_token(HttpSettings.from_config({"data_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="empty"):
        TcpSettings.from_config({"data_dir": str(tmp_path)}).find_admin_token()


def test_without_a_token_tcp_has_no_admin_session_and_http_refuses(tmp_path):
    assert TcpSettings.from_config({"data_dir": str(tmp_path)}).find_admin_token() is None
    assert not (tmp_path / "admin.token").exists()            # TCP never writes one
    with pytest.raises(ValueError, match="no admin token"):
        resolve_admin_token(HttpSettings.from_config({}))


def test_the_environment_comes_before_the_file(tmp_path, monkeypatch):
    (tmp_path / "admin.token").write_text("bkt_from_the_file_0123456789\n")
    monkeypatch.setenv("BUKT_ADMIN_TOKEN", "bkt_from_the_environment_01234")
    assert TcpSettings.from_config({"data_dir": str(tmp_path)}).find_admin_token() == \
        resolve_admin_token(HttpSettings.from_config({"data_dir": str(tmp_path)}))[0] == \
        "bkt_from_the_environment_01234"
