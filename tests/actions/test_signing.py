"""Standard Webhooks signatures (the scheme's published example, rotation, secret forms)."""

import base64

import pytest

from relay.actions.signing import secret_key, standard_webhooks_signer

# The example in the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_example():
    headers = standard_webhooks_signer(SPEC_SECRET)(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert headers == {
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_several_secrets_give_one_signature_each_for_rotation():
    headers = standard_webhooks_signer(f"{SPEC_SECRET} raw-secret")(
        SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY
    )
    first, second = headers["webhook-signature"].split(" ")
    assert first == SPEC_SIGNATURE
    assert second.startswith("v1,") and second != first


def test_raw_secret_is_used_as_its_bytes():
    assert secret_key("plain") == b"plain"
    assert secret_key("whsec_" + base64.b64encode(b"key").decode()) == b"key"


def test_whsec_secret_that_is_not_base64_is_an_error():
    with pytest.raises(ValueError):
        secret_key("whsec_not base64!")
