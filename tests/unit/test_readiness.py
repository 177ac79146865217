"""wait_ready against a real HTTP server on 127.0.0.1 that replays vLLM's recorded answers."""

from __future__ import annotations

import socket

import pytest

from launcher.errors import EXIT_NOT_READY, NotReadyError
from launcher.live.readiness import Progress, base_url, probe, wait_ready
from tests.fakes import FakeVllm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://h.example/v1", "https://h.example"),
    ],
)
def test_base_url_accepts_what_users_paste(given: str, expected: str) -> None:
    assert base_url(given) == expected


@pytest.mark.slow
def test_ready_when_model_listed() -> None:
    with FakeVllm(model="qwen", root="/models/qwen") as fake:
        info = wait_ready(fake.url + "/v1", timeout=5, model="qwen", interval=0.05)
    assert info.model == "qwen"
    assert info.models == ("qwen",)
    assert info.max_model_len == 4096  # from the recorded vLLM /v1/models body
    assert info.root == "/models/qwen"
    assert info.url == fake.url


@pytest.mark.slow
def test_without_model_takes_first_listed() -> None:
    with FakeVllm(model="whatever") as fake:
        assert wait_ready(fake.url, timeout=5, interval=0.05).model == "whatever"


@pytest.mark.slow
def test_health_alone_is_not_ready_waits_for_model_list() -> None:
    seen: list[Progress] = []
    with FakeVllm(ready_after=0.0, models_after=0.6) as fake:
        info = wait_ready(fake.url, timeout=10, interval=0.05, progress=seen.append)
    details = [p.detail for p in seen]
    assert any("lists no model yet" in d for d in details), details
    assert seen[-1].stage == "ready"
    assert info.elapsed_s >= 0.5


@pytest.mark.slow
def test_progress_reports_changes_not_every_poll() -> None:
    seen: list[Progress] = []
    with FakeVllm(ready_after=0.5) as fake:
        wait_ready(fake.url, timeout=10, interval=0.02, progress=seen.append)
    # ~25 polls answered 503; reported once, then the ready line.
    assert [p.stage for p in seen] == ["health", "ready"], seen
    assert seen[0].detail.startswith("/health answered 503")


def test_timeout_names_what_was_seen_last_connection_refused() -> None:
    port = free_port()
    with pytest.raises(NotReadyError) as err:
        wait_ready(f"http://127.0.0.1:{port}", timeout=0.3, interval=0.05)
    message = str(err.value)
    assert "within 0.3 s" in message
    assert "last seen: connection refused" in message
    assert "\n" not in message
    assert err.value.exit_code == EXIT_NOT_READY == 5


@pytest.mark.slow
def test_timeout_when_other_model_listed() -> None:
    with FakeVllm(model="other") as fake, pytest.raises(NotReadyError, match=r"lists other but not 'wanted'"):
        wait_ready(fake.url, timeout=0.3, model="wanted", interval=0.05)


@pytest.mark.slow
def test_timeout_while_health_503() -> None:
    with FakeVllm(ready_after=60) as fake, pytest.raises(NotReadyError, match=r"last seen: /health answered 503"):
        wait_ready(fake.url, timeout=0.3, interval=0.05)


@pytest.mark.slow
def test_api_key_refused_fails_at_once() -> None:
    with FakeVllm(api_key="secret") as fake:
        with pytest.raises(NotReadyError, match="wants an API key"):
            wait_ready(fake.url, timeout=30, interval=0.05)
        with pytest.raises(NotReadyError, match="wrong API key"):
            wait_ready(fake.url, timeout=30, interval=0.05, api_key="nope")
        assert wait_ready(fake.url, timeout=5, interval=0.05, api_key="secret").model == "tiny"


def test_alive_callback_can_stop_the_wait() -> None:
    class Died(Exception):
        pass

    calls = []

    def alive() -> None:
        calls.append(1)
        if len(calls) >= 3:
            raise Died

    with pytest.raises(Died):
        wait_ready(f"http://127.0.0.1:{free_port()}", timeout=30, interval=0.01, alive=alive)


def test_timeout_uses_injected_clock_without_sleeping() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    with pytest.raises(NotReadyError, match="within 10 s"):
        wait_ready(f"http://127.0.0.1:{free_port()}", timeout=10, interval=3, clock=lambda: now[0], sleep=sleep)
    assert slept == [3, 3, 3, 1]  # the last sleep is cut to the deadline


@pytest.mark.slow
def test_probe_reports_non_model_list() -> None:
    with FakeVllm() as fake:
        fake.models_template = {"unexpected": True}
        seen = probe(fake.url)
    assert seen.info is None and "lists no model" in seen.detail


# ------------------------------------------------------------------------------- the command


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `launcher ARGS` through the real entry point (its error boundary and exit codes)."""
    from launcher.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.slow
def test_wait_command_ready(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeVllm(model="tiny", ready_after=0.3) as fake:
        code, out, err = run_cli(["wait", "--url", fake.url, "--timeout", "5", "--interval", "0.1"], capsys)
    assert code == 0, err
    assert f"ready: {fake.url} serves 'tiny', max_model_len 4096" in out
    assert "launcher: waiting (0 s): /health answered 503" in err


def test_wait_command_timeout_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = run_cli(["wait", "--url", f"http://127.0.0.1:{port}", "--timeout", "0.2", "--interval", "0.1", "-q"], capsys)
    assert code == 5
    assert err.strip().startswith("launcher: error: server at")
    assert "last seen: connection refused" in err
    assert len(err.strip().splitlines()) == 1  # -q: no progress, one error line


@pytest.mark.slow
def test_wait_command_api_key_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "secret")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with FakeVllm(api_key="secret") as fake:
        ok = run_cli(["wait", "--url", fake.url, "--timeout", "5", "--api-key-env", "MY_KEY"], capsys)
        missing = run_cli(["wait", "--url", fake.url, "--timeout", "5", "--api-key-env", "NOT_SET_ANYWHERE"], capsys)
        refused = run_cli(["wait", "--url", fake.url, "--timeout", "5"], capsys)
    assert ok[0] == 0, ok
    assert missing[0] == 2 and "NOT_SET_ANYWHERE is not set" in missing[2]
    assert refused[0] == 5 and "wants an API key" in refused[2]


@pytest.mark.slow
def test_wait_command_default_key_from_vllm_api_key(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "secret")
    with FakeVllm(api_key="secret") as fake:
        code, _, err = run_cli(["wait", "--url", fake.url, "--timeout", "5"], capsys)
    assert code == 0, err
