"""How `vigocli` reaches the compliance API: `Api`, a JSON client on the standard library,
`CliError` for its one-line failures, and the `--url` / `--token-file` options that say
which worker to ask with which token (`Connection`, `connection_options`, `pass_api`).
The commands themselves are in `processor.cli.vigocli`."""

from __future__ import annotations

import functools
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import click

from processor.cli.kafka import EXIT_USAGE
from topics.escape import printable

DEFAULT_URL = "http://localhost:6066"
EXIT_UNREACHABLE = 2
#: The API refused the token (SPEC 10.8); usage errors exit with `EXIT_USAGE` (64).
EXIT_TOKEN = 3


class CliError(click.ClickException):
    """One line on stderr, prefixed with the program name, and an exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"vigocli: {printable(self.format_message())}", err=True, file=file)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib copies `Authorization` onto a redirect to any host: never follow one. The
    3xx reaches `Api.get` as an `HTTPError` and is reported (SPEC 11.4)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class Api:
    """A minimal JSON client on the standard library: nothing to install on a jump host."""

    def __init__(self, url: str, timeout: float, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def get(self, path: str, query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON body) for 200 and 404; anything else is a `CliError`."""
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, headers=headers)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, _json(response.read(), url)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                location = exc.headers.get("Location") or "(no Location)"
                raise CliError(
                    f"{url} redirected to {location}; point --url at the final address"
                ) from None
            body = _json(exc.read(), url, strict=False)
            reason = body.get("error") if isinstance(body, dict) else None
            if exc.code == 404 and isinstance(body, dict) and "error" in body:
                return 404, body
            if exc.code == 401:
                how = "was refused" if self.token is not None else "is needed"
                raise CliError(
                    f"the processor at {self.url} answered 401: its API token {how}; "
                    "give it with --token-file PATH or VIGO_TOKEN",
                    EXIT_TOKEN,
                ) from None
            raise CliError(
                f"the processor at {self.url} answered {exc.code}: {reason or exc.reason}",
                EXIT_USAGE if exc.code == 400 else EXIT_UNREACHABLE,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(f"cannot reach the processor at {self.url}: {reason}") from None


def _json(raw: bytes, url: str, *, strict: bool = True) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise CliError(f"{url} answered with JSON nested too deeply") from None
    except ValueError:
        if not strict:
            return None
        raise CliError(f"{url} did not answer with JSON; is --url a Vigo processor?") from None


@dataclass
class Connection:
    """Where to ask and with what token: set by the options before the subcommand and
    overridden by the same options after it (SPEC 10.8)."""

    url: str = DEFAULT_URL
    timeout: float = 10.0
    token_file: Path | None = None

    def api(self) -> Api:
        token = os.environ.get("VIGO_TOKEN") or None
        if self.token_file is not None:
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise click.BadParameter(
                    f"cannot read {self.token_file}: {exc.strerror}", param_hint="--token-file"
                ) from None
            if not token:
                raise click.BadParameter(f"{self.token_file} is empty", param_hint="--token-file")
        return Api(self.url, self.timeout, token)


def _set_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Connection).url = value


def _set_token_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Connection).token_file = value


URL_HELP = "Any processor worker's web address (env VIGO_URL; default " + DEFAULT_URL + ")."
TOKEN_HELP = "A file holding the API's bearer token (env VIGO_TOKEN: the token itself)."
TOKEN_TYPE = click.Path(dir_okay=False, path_type=Path)


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--url` and `--token-file` also after the subcommand (SPEC 10.8), where they win."""
    command = click.option(
        "--token-file", type=TOKEN_TYPE, expose_value=False, callback=_set_token_file,
        help=TOKEN_HELP,
    )(command)  # fmt: skip
    return click.option("--url", expose_value=False, callback=_set_url, help=URL_HELP)(command)


def pass_api(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command's first argument: an `Api` built from the connection options."""

    @functools.wraps(command)
    def with_api(*args: Any, **kwargs: Any) -> Any:
        connection = click.get_current_context().find_object(Connection) or Connection()
        return command(connection.api(), *args, **kwargs)

    return with_api
