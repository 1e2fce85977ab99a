"""The load's accounts keep working past their tokens' lifetime: a session renews by the
refresh route, and logs in again when its refresh token is refused."""

from __future__ import annotations

import httpx

from dmp_stack.testing import RunningStack
from dmp_stack.workload import Session


def me(stack: RunningStack, token: str) -> int:
    r = httpx.get(f"{stack.url}/v1/me", headers={"authorization": f"Bearer {token}"})
    return r.status_code


def test_a_session_renews_by_refresh_then_by_login(stack: RunningStack) -> None:
    admin = stack.admin_token()
    pro = stack.create_professional(admin)
    logins = []

    def login() -> dict[str, object]:
        logins.append(1)
        return stack.login("professional", pro["rpps"], pro["password"], pro["email"])

    session = Session(stack.url, login)
    first = session.token()
    assert me(stack, first) == 200 and len(logins) == 1
    assert session.token() == first  # not due: the same token

    session.renew_at = 0.0  # due: renewed by the refresh route, no new login
    old_refresh = session.refresh
    second = session.token()
    assert second != first and session.refresh != old_refresh and len(logins) == 1
    assert me(stack, second) == 200

    session.refresh, session.renew_at = "no-such-refresh-token", 0.0  # refused: logs in again
    third = session.token()
    assert third not in (first, second) and len(logins) == 2
    assert me(stack, third) == 200
