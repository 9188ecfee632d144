"""A third-party OAuth 2.0 client against a running auth service, run by the test
`oauth_client::a_standard_oauth_client_configures_itself_and_pyjwt_verifies_its_tokens`.

authlib configures itself from the RFC 8414 metadata and uses the password, refresh_token and
client_credentials grants; PyJWT verifies every access token through the JWKS the metadata
names. Prints what it saw as JSON on stdout; any failure raises (exit status 1).

    oauth_client.py BASE_URL EMAIL PASSWORD CLIENT_ID CLIENT_SECRET AUDIENCE
"""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session


def main() -> None:
    base, email, password, client_id, client_secret, audience = sys.argv[1:7]
    metadata = requests.get(
        f"{base}/.well-known/oauth-authorization-server", timeout=10
    ).json()
    token_endpoint = metadata["token_endpoint"]
    for grant in ("password", "refresh_token", "client_credentials"):
        assert grant in metadata["grant_types_supported"], grant
    keys = jwt.PyJWKClient(metadata["jwks_uri"])

    def verified(access_token: str) -> dict:
        key = keys.get_signing_key_from_jwt(access_token)
        return jwt.decode(
            access_token,
            key.key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=metadata["issuer"],
        )

    # A person: the password grant, then the refresh grant, through one session.
    person = OAuth2Session(client_id="oauth-client-test", token_endpoint_auth_method="none")
    signed_in = person.fetch_token(token_endpoint, username=email, password=password)
    first_refresh = signed_in["refresh_token"]
    refreshed = person.refresh_token(token_endpoint, refresh_token=first_refresh)
    me = person.get(f"{base}/api/auth/v1/me", timeout=10)
    me.raise_for_status()

    # A service: client credentials, authenticated the way the metadata offers first.
    method = metadata["token_endpoint_auth_methods_supported"][0]
    service = OAuth2Session(
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint_auth_method=method,
    )
    service_token = service.fetch_token(token_endpoint, grant_type="client_credentials")

    json.dump(
        {
            "issuer": metadata["issuer"],
            "signed_in": verified(signed_in["access_token"]),
            "refreshed": verified(refreshed["access_token"]),
            "refresh_token_rotated": refreshed["refresh_token"] != first_refresh,
            "me": me.json(),
            "service_auth_method": method,
            "service": verified(service_token["access_token"]),
            "service_has_refresh_token": "refresh_token" in service_token,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
