"""The caller of an action: who, from where (for the audit log)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from strongroom.web.auth import Principal
from strongroom.web.context import WebContext, client_of, context_of


@dataclass(frozen=True)
class Caller:
    ctx: WebContext
    principal: Principal
    client: str

    @property
    def name(self) -> str:
        return self.principal.name

    @classmethod
    def of(cls, request: Request, principal: Principal) -> Caller:
        return cls(context_of(request), principal, client_of(request))
