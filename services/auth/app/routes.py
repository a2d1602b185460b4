"""The auth endpoints. Login, refresh and the JWKS are public (no bearer at the gateway)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from nexus_kit import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    endpoint_flags,
    get_logger,
)

from . import schemas, sessions, store
from .bodylimit import BodyLimitRoute
from .deps import (
    AdminPrincipal,
    CurrentPrincipal,
    IntrospectionCaller,
    Principal,
    StateDep,
    authenticate,
)
from .security import ID_RE, display_prefix, new_api_key
from .state import AuthState

router = APIRouter(route_class=BodyLimitRoute, tags=["auth"])
log = get_logger("nexus.auth")
PUBLIC = endpoint_flags(public=True)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
IdParam = Annotated[str, Path(alias="id")]
TOKEN_LIMITS = {"rate_limit_tpm", "token_budget_daily", "token_budget_monthly"}
UserFilter = Annotated[str | None, Query(max_length=40, pattern=schemas.ID_PATTERN)]


@router.post(
    "/v1/users", operation_id="auth.users.create", status_code=201, summary="Create a user"
)
async def create_user(
    body: schemas.CreateUserRequest, state: StateDep, admin: AdminPrincipal
) -> schemas.User:
    password_hash = await state.passwords.hash(body.password)
    async with state.db.session() as session:
        user = await store.add_user(session, body.username, password_hash, body.role)
    log.info(
        "user created", user_id=user.id, username=user.username, role=user.role, by=admin.user_id
    )
    return schemas.User.model_validate(user)


@router.get("/v1/users", operation_id="auth.users.list", summary="List users")
async def list_users(state: StateDep, _: AdminPrincipal) -> schemas.UserList:
    async with state.db.session() as session:
        users = await store.list_users(session)
    return schemas.UserList(data=[schemas.User.model_validate(u) for u in users])


@router.post("/v1/auth/token", operation_id="auth.token", summary="Log in", openapi_extra=PUBLIC)
async def token(
    body: schemas.TokenRequest, state: StateDep, response: Response
) -> schemas.TokenResponse:
    response.headers.update(NO_STORE)
    return await sessions.login(state, body.username, body.password)


@router.post(
    "/v1/auth/refresh", operation_id="auth.refresh", summary="Rotate a refresh token",
    openapi_extra=PUBLIC,
)  # fmt: skip
async def refresh(
    body: schemas.RefreshRequest, state: StateDep, response: Response
) -> schemas.TokenResponse:
    response.headers.update(NO_STORE)
    return await sessions.refresh(state, body.refresh_token)


@router.get("/v1/auth/me", operation_id="auth.me", summary="The caller")
async def me(principal: CurrentPrincipal, state: StateDep) -> schemas.Me:
    async with state.db.session() as session:
        user = await store.get_user(session, principal.user_id)
    if user is None:
        raise AuthenticationError("Invalid credentials (unknown user).")
    return schemas.Me(
        **schemas.User.model_validate(user).model_dump(),
        token_type=principal.token_type,
        key_id=principal.key_id,
    )


@router.post(
    "/v1/api-keys",
    operation_id="auth.api_keys.create",
    status_code=201,
    summary="Create an API key",
)
async def create_api_key(
    body: schemas.CreateApiKeyRequest, state: StateDep, principal: CurrentPrincipal,
    response: Response,
) -> schemas.CreatedApiKey:  # fmt: skip
    owner = await _key_owner(state, principal, body.user_id)
    secret = new_api_key()
    async with state.db.session() as session:
        key = await store.add_api_key(
            session, user_id=owner, name=body.name, key_hash=state.digester.digest(secret),
            prefix=display_prefix(secret), rate_limit_rpm=body.rate_limit_rpm,
            limits=body.model_dump(include=TOKEN_LIMITS),
        )  # fmt: skip
    log.info("api key created", key_id=key.id, owner=owner, by=principal.user_id)
    response.headers.update(NO_STORE)
    return schemas.CreatedApiKey(**schemas.ApiKey.model_validate(key).model_dump(), key=secret)


async def _key_owner(state: AuthState, principal: Principal, user_id: str | None) -> str:
    if user_id is None or user_id == principal.user_id:
        return principal.user_id
    if not principal.is_admin:
        raise PermissionDeniedError("Only admins may create keys for other users.", param="user_id")
    async with state.db.session() as session:
        if await store.get_user(session, user_id) is None:
            raise NotFoundError(f"No user with id '{user_id}'.", param="user_id")
    return user_id


@router.get("/v1/api-keys", operation_id="auth.api_keys.list", summary="List API keys")
async def list_api_keys(
    state: StateDep, principal: CurrentPrincipal, user_id: UserFilter = None
) -> schemas.ApiKeyList:
    """Own active keys; admins see everyone's (or one user's with ``?user_id=``)."""
    if principal.is_admin:
        owner = user_id
    elif user_id in (None, principal.user_id):
        owner = principal.user_id
    else:
        raise PermissionDeniedError("Only admins may list other users' keys.", param="user_id")
    async with state.db.session() as session:
        keys = await store.list_keys(session, owner)
    return schemas.ApiKeyList(data=[schemas.ApiKey.model_validate(k) for k in keys])


@router.patch(
    "/v1/api-keys/{id}", operation_id="auth.api_keys.update", summary="Change a key's limits"
)
async def update_api_key(
    key_id: IdParam, body: schemas.KeyLimits, state: StateDep, admin: AdminPrincipal
) -> schemas.ApiKey:
    """Admins only. Fields sent are set (``null`` clears a limit); fields left out stay."""
    limits = body.model_dump(exclude_unset=True)
    key = None
    if ID_RE.match(key_id):
        async with state.db.session() as session:
            key = await store.update_key_limits(session, key_id, limits)
    if key is None:
        raise NotFoundError(f"No active API key with id '{key_id}'.", param="id")
    log.info("api key limits changed", key_id=key_id, by=admin.user_id, fields=sorted(limits))
    return schemas.ApiKey.model_validate(key)


@router.delete(
    "/v1/api-keys/{id}", operation_id="auth.api_keys.delete", summary="Revoke an API key"
)
async def delete_api_key(
    key_id: IdParam, state: StateDep, principal: CurrentPrincipal
) -> schemas.DeletedApiKey:
    owner = None if principal.is_admin else principal.user_id
    revoked = False
    if ID_RE.match(key_id):
        async with state.db.session() as session:
            revoked = await store.revoke_key(session, key_id, owner)
    if not revoked:
        raise NotFoundError(f"No active API key with id '{key_id}'.", param="id")
    log.info("api key revoked", key_id=key_id, by=principal.user_id)
    return schemas.DeletedApiKey(id=key_id)


@router.post(
    "/v1/auth/introspect", operation_id="auth.introspect", summary="Check a token (gateway)"
)
async def introspect(
    body: schemas.IntrospectRequest, state: StateDep, _: IntrospectionCaller, response: Response
) -> schemas.Introspection:
    response.headers.update(NO_STORE)
    try:
        who = await authenticate(state, body.token)
    except AuthenticationError:
        return schemas.Introspection(active=False)
    return schemas.Introspection(
        active=True, subject=who.user_id, username=who.username,
        role=who.role,  # type: ignore[arg-type]
        token_type=who.token_type, key_id=who.key_id, rate_limit_rpm=who.rate_limit_rpm,
        rate_limit_tpm=who.rate_limit_tpm, token_budget_daily=who.token_budget_daily,
        token_budget_monthly=who.token_budget_monthly, exp=who.expires_at,
    )  # fmt: skip


@router.get(
    "/.well-known/jwks.json", operation_id="auth.jwks", summary="Public signing keys",
    openapi_extra=PUBLIC,
)  # fmt: skip
async def jwks(state: StateDep, response: Response) -> schemas.Jwks:
    response.headers["Cache-Control"] = "public, max-age=300"
    return schemas.Jwks.model_validate(state.signer.keyring.jwks())
