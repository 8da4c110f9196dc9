"""A small OpenID Connect provider on 127.0.0.1 for tests: real HTTP, a real RSA key.

* `GET /.well-known/openid-configuration` — discovery.
* `GET /jwks` — the public key set.
* `GET /authorize` — the user "logs in" at once as `next_identity` and is sent back to the
  `redirect_uri` with a code and the `state` (or with `error=` when `refuse` is set). The
  request is kept in `authorize_requests`.
* `POST /token` — client authentication (HTTP Basic), the code (once), the redirect URI and
  the PKCE verifier (S256) are checked as a provider must; answers with an ID token signed
  RS256 with `kid`. `id_token_overrides` changes claims (a wrong audience, an old `exp` …) and
  `sign_with` another key, so tests can see oximon refuse bad tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class FakeOIDC:
    client_id: str = "oximon-test"
    client_secret: str = "oidc-test-secret"  # noqa: S105 - a test provider
    next_identity: dict[str, Any] = field(default_factory=lambda: {"sub": "user-1"})
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    refuse: str | None = None
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    kid: str = "test-key-1"
    sign_with: rsa.RSAPrivateKey | None = None
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    _codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def issuer(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeOIDC:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, fake.discovery())
                elif url.path == "/jwks":
                    jwk = RSAAlgorithm.to_jwk(fake.key.public_key(), as_dict=True)
                    self._json(200, {"keys": [{**jwk, "kid": fake.kid, "use": "sig"}]})
                elif url.path == "/authorize":
                    query = dict(parse_qsl(url.query))
                    fake.authorize_requests.append(query)
                    back = fake.authorize(query)
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                fake.token_requests.append(form)
                status, body = fake.token(form, self.headers.get("Authorization", ""))
                self._json(status, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    def authorize(self, query: dict[str, str]) -> str:
        redirect = query.get("redirect_uri", "")
        if self.refuse:
            return f"{redirect}?{urlencode({'error': self.refuse, 'state': query.get('state')})}"
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"query": query, "identity": dict(self.next_identity)}
        return f"{redirect}?{urlencode({'code': code, 'state': query.get('state', '')})}"

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        grant = self._codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {"error": "invalid_grant"}
        query = grant["query"]
        if form.get("redirect_uri") != query.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if query.get("code_challenge_method") != "S256" or challenge != query.get("code_challenge"):
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": query.get("nonce"),
            **grant["identity"],
            **self.id_token_overrides,
        }
        id_token = jwt.encode(
            claims, self.sign_with or self.key, algorithm="RS256", headers={"kid": self.kid}
        )
        return 200, {
            "access_token": "at-" + secrets.token_urlsafe(8),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }
