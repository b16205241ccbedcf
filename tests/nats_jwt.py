"""Decentralised NATS auth for tests: an operator, accounts and users as nkeys, signed
JWTs (v2 claims) and a standard ``.creds`` file, with nothing but nkeys and the stdlib."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass

import nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Identity:
    """One nkey pair: the seed signs, the public key names the subject."""

    seed: bytes
    public: str

    @classmethod
    def new(cls, prefix: int) -> Identity:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def issue(self, subject: Identity, name: str, nats: dict) -> str:
        """A JWT about ``subject`` signed by this identity."""
        claims = {
            "iat": int(time.time()),
            "iss": self.public,
            "sub": subject.public,
            "name": name,
            "nats": {**nats, "version": 2},
        }
        # the jti is the hash of the claims without it, as the Go jwt library computes it
        body = json.dumps(claims, separators=(",", ":")).encode()
        claims["jti"] = base64.b32encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        signing = (
            _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = nkeys.from_seed(bytearray(self.seed)).sign(signing.encode())
        return signing + "." + _b64(signature)


# an account with any JetStream limit other than 0 has JetStream; -1 means unlimited
UNLIMITED_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
ACCOUNT_LIMITS = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}


def operator_setup(user_name: str = "fleet") -> tuple[str, str]:
    """(server config text, .creds text): an operator trusting a system account and a
    JetStream-enabled account, and a user of that account."""
    operator = Identity.new(nkeys.PREFIX_BYTE_OPERATOR)
    system, account = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT), Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    user = Identity.new(nkeys.PREFIX_BYTE_USER)
    operator_jwt = operator.issue(operator, "test-operator", {"type": "operator", "system_account": system.public})
    system_jwt = operator.issue(system, "SYS", {"type": "account", "limits": ACCOUNT_LIMITS})
    account_jwt = operator.issue(
        account, "FLEET", {"type": "account", "limits": {**ACCOUNT_LIMITS, **UNLIMITED_JETSTREAM}}
    )
    user_jwt = account.issue(
        user, user_name, {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    )
    config = (
        f"operator: {operator_jwt}\nsystem_account: {system.public}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {system.public}: {system_jwt}\n  {account.public}: {account_jwt}\n}}\n"
    )
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
    return config, creds
