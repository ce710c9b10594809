"""How every module ends a run, in one place.

An engine error becomes a failure whose message names the problem and the
fix; a bug of ours becomes "unexpected error in <module>" (the traceback
only with -vvv); every failure reports ``changed`` truthfully. Plain Python:
the AnsibleModule is passed in, nothing is imported from Ansible.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple, Type, Union

from ..common import hostdeps
from ..common.errors import Refusal, RestorekeeperError
from ..pg.postgres import connect_params_secrets

# The Python modules a run imports (hostdeps import names), or a function
# returning them (for example derived from the configuration file).
Needs = Union[Iterable[str], Callable[[], Iterable[str]]]


class FailWithResult(RestorekeeperError):
    """The work ran, but the module must fail; result is everything to report (msg included)."""

    def __init__(self, result: Dict[str, Any]) -> None:
        super().__init__(str(result.get("msg", "failed")))
        self.result = result


def nothing_changed(_error: Optional[BaseException]) -> bool:
    return False


def no_details() -> Dict[str, Any]:
    return {}


def config_needs(config_path: str, *always: str) -> Callable[[], Set[str]]:
    """Needs of a run that reads config_path: what its settings need (hostdeps.needs_for_config) plus always."""

    def needs() -> Set[str]:
        from ..config.config import Config  # only when the preflight runs

        return set(always) | hostdeps.needs_for_config(Config.load(config_path))

    return needs


def check_host_packages(name: str, needs: Needs) -> None:
    """Preflight: a Refusal naming every package this Python lacks for the run, before anything changes."""
    if callable(needs):
        try:
            needs = needs()
        except RestorekeeperError:
            return  # for example an invalid configuration file: the action itself reports it
    hostdeps.require(needs, "module %s" % name, Refusal)


def run_module(
    module: Any,
    name: str,
    action: Callable[[], Dict[str, Any]],
    changed: Callable[[Optional[BaseException]], bool] = nothing_changed,
    details: Callable[[], Dict[str, Any]] = no_details,
    expected: Tuple[Type[BaseException], ...] = (),
    prefix: str = "",
    needs: Needs = (),
) -> Dict[str, Any]:
    """action()'s result, or module.fail_json (which exits) with the reason.

    changed(error) says whether the host changed before the failure (error
    is None for a bug of ours); details() adds what every failure reports,
    for example the statements already executed. expected names further
    exception types that carry a message for the user (like the engine's
    errors); prefix goes before every such message. needs names the Python
    modules the action imports (see hostdeps); any missing fails the module
    before action() runs, naming the distribution packages to install.
    """
    with_message = (RestorekeeperError,) + expected
    # connect_params refuses passwords, but the value given must not show in the refusal's result
    # (its invocation echoes the module's arguments) either.
    secrets = connect_params_secrets(getattr(module, "params", None) or {})
    if secrets:
        module.no_log_values.update(secrets)
    try:
        check_host_packages(name, needs)
        return action()
    except FailWithResult as exc:
        module.fail_json(**exc.result)
    except Refusal as exc:
        module.fail_json(msg=prefix + str(exc), changed=False, **details())
    except with_message as exc:
        module.fail_json(msg=prefix + str(exc), changed=changed(exc), **details())
    except Exception as exc:  # pylint: disable=broad-exception-caught  # a bug of ours still gets a message
        module.fail_json(msg="unexpected error in %s: %s: %s" % (name, type(exc).__name__, exc),
                         exception=traceback.format_exc(), changed=changed(None), **details())
    raise AssertionError("fail_json returned")  # it exits the module
