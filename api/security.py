"""Passwords (argon2) and bearer tokens (signed JWT), and the current-user dependency."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

_hasher = PasswordHasher()
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# Verifying against this costs what a real check costs, so a login for an unknown name takes as
# long as a wrong password and the timing does not tell which user names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def verify_password_or_waste_time(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        verify_password(_DUMMY_HASH, password)
        return False
    return verify_password(password_hash, password)


def new_refresh_token() -> tuple[str, bytes]:
    """A refresh token (shown once to the client) and the hash the server keeps of it. The
    token is 256 random bits, so a fast hash is enough: nothing to brute-force."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    role: str


def issue_token(secret: str, user: CurrentUser, ttl_s: int) -> str:
    # Token lifetimes are wall-clock security facts, not platform (simulated) time.
    now = datetime.now(UTC)
    claims = {
        "sub": str(user.id),
        "name": user.username,
        "role": user.role,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_s),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def current_user(request: Request, token: Annotated[str, Depends(oauth2_scheme)]) -> CurrentUser:
    secret = request.app.state.settings.jwt_secret.get_secret_value()
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM])
        return CurrentUser(int(claims["sub"]), str(claims["name"]), str(claims["role"]))
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or expired token",
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc


def require(*roles: str):  # noqa: ANN201 - a FastAPI dependency factory
    def dependency(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
        if user.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs role: {' or '.join(roles)}")
        return user

    return dependency


Clinician = Annotated[CurrentUser, Depends(require("admin", "nurse", "doctor"))]
Admin = Annotated[CurrentUser, Depends(require("admin"))]
