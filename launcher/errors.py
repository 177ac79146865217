"""One error hierarchy; each kind carries the exit code runbooks rely on."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_HARDWARE = 3
EXIT_ENGINE_START = 4
EXIT_NOT_READY = 5

EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_INTERNAL: "internal error (a bug in launcher; LAUNCHER_DEBUG=1 shows the traceback)",
    EXIT_USAGE: "usage or profile error (bad flag, bad YAML, invalid value)",
    EXIT_HARDWARE: "hardware check failed (GPUs cannot run the profile, or NVML unreadable)",
    EXIT_ENGINE_START: "engine could not be started (vllm missing or exited during start)",
    EXIT_NOT_READY: "server readiness or smoke test failed",
}


class LauncherError(Exception):
    """A failure the user can act on: printed as one line, exits with `exit_code`."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ProfileError(LauncherError):
    """Bad profile, override or usage: names file, line and dotted key where known."""

    exit_code = EXIT_USAGE


class HardwareError(LauncherError):
    """The GPUs cannot run the profile, or the GPUs could not be read."""

    exit_code = EXIT_HARDWARE


class EngineStartError(LauncherError):
    """vLLM could not be started (not installed, exec failed, died during start)."""

    exit_code = EXIT_ENGINE_START


class NotReadyError(LauncherError):
    """The server did not become ready in time, or the smoke test failed."""

    exit_code = EXIT_NOT_READY


def located(key: str, message: str, source: str | None = None, line: int | None = None) -> str:
    """Format `file:line: dotted.key: message`, leaving out what is unknown."""
    where = ""
    if source:
        where = f"{source}:{line}: " if line else f"{source}: "
    return f"{where}{key}: {message}" if key else f"{where}{message}"
