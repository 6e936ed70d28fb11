"""The application API through standard third-party clients, against a live server.

Usage: python app_clients.py BASE_URL ADMIN_TOKEN SCIM_TOKEN APP_KEY TENANT
- openapi-spec-validator validates the document served at /api/v1/openapi.json;
- PyJWT verifies an entitlement token with nothing but the keys at /.well-known/jwks.json
  (as the README shows), and refuses it once tampered with.
Exits non-zero on any failure.
"""

import json
import sys
import urllib.request

import jwt
from openapi_spec_validator import validate


def call(base, method, path, token, body=None, ctype="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def main() -> int:
    base, admin, scim, key, tenant = sys.argv[1:6]
    doc = call(base, "GET", "/api/v1/openapi.json", None)
    validate(doc)
    print(f"openapi-spec-validator: valid OpenAPI {doc['openapi']}, {len(doc['paths'])} paths")

    model = {
        "products": [{"key": "ci-app", "name": "CI app", "plans": [
            {"key": "pro", "rank": 1, "features": ["export"], "limits": {"projects": 100}}]}],
        "tenants": [{"id": tenant, "subscriptions": [
            {"product": "ci-app", "plan": "pro", "seats": 5, "starts_at": "2026-01-01T00:00:00Z"}]}],
    }
    call(base, "PUT", "/api/v1/model", admin, model)
    user = call(base, "POST", "/scim/v2/Users", scim,
                {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "pyjwt@example.com"},
                "application/scim+json")
    answer = call(base, "POST", "/api/v1/check", key, {"user": "pyjwt@example.com", "feature": "export"})
    assert answer["allowed"] is True, answer

    token = call(base, "POST", "/api/v1/tokens/entitlements", key, {"user": "pyjwt@example.com"})["token"]
    keys = jwt.PyJWKClient(base + "/.well-known/jwks.json")
    claims = jwt.decode(token, keys.get_signing_key_from_jwt(token).key,
                        algorithms=["EdDSA"], issuer="seatkeeper")
    assert claims["sub"] == user["id"], claims
    assert claims["tenant"] == tenant, claims
    assert "export" in claims["features"] and claims["limits"]["projects"] == 100, claims
    head, body, sig = token.split(".")
    forged = ".".join([head, body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1], sig])
    try:
        jwt.decode(forged, keys.get_signing_key_from_jwt(token).key, algorithms=["EdDSA"], issuer="seatkeeper")
    except jwt.InvalidTokenError:
        pass
    else:
        print("FAIL: a tampered token verified")
        return 1
    print(f"PyJWT: token verified from the JWKS alone (kid {jwt.get_unverified_header(token)['kid']}); tampered token refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
