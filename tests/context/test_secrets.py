"""Secret detection: planted secrets are found (by rule), ordinary code is not flagged, and a
secret never reaches the packed text, the JSON manifest, the summary or an --output file."""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

import pytest

from agent.context import pack_repository, scan_secrets
from agent.context import secrets as secrets_module
from agent.context.rules import secret_name_rule
from tests.context.conftest import STDLIB, stdlib_sources
from tests.support.cli import v4code

_rng = random.Random(1234)


def rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


HEX = "0123456789abcdef"
B64 = string.ascii_letters + string.digits + "+/"
PEM_BODY = "\n".join(rand(64, B64) for _ in range(6))

PLANTED = {
    "private-key-block": f"KEY = '''-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----'''\n",
    "private-key-block-escaped": 'k = "-----BEGIN OPENSSH PRIVATE KEY-----\\n'
    + rand(70, B64)
    + '\\n-----END"\n',
    "aws-access-key-id": f"aws_id = 'AKIA{rand(16, string.ascii_uppercase + string.digits)}'\n",
    "aws-secret-access-key": f"aws_secret_access_key = {rand(40, B64)}\n",
    "google-api-key": f"const key = 'AIza{rand(35)}';\n",
    "github-token": f"GH = 'ghp_{rand(36)}'\n",
    "github-fine-grained": f"token: github_pat_{rand(82, string.ascii_letters + string.digits + '_')}\n",
    "gitlab-token": f"glpat-{rand(20)}\n",
    "slack-token": f"SLACK = 'xoxb-{rand(11, string.digits)}-{rand(12, string.digits)}-{rand(24)}'\n",
    "slack-webhook": f"url = 'https://hooks.slack.com/services/T{rand(8, string.ascii_uppercase)}/B{rand(8, string.ascii_uppercase)}/{rand(24)}'\n",
    "stripe-key": f"stripe.api_key = 'sk_live_{rand(24)}'\n",
    "openai-api-key": f"OPENAI_API_KEY=sk-proj-{rand(48, string.ascii_letters + string.digits + '-_')}\n",
    "anthropic-api-key": f"key = 'sk-ant-api03-{rand(90)}'\n",
    "deepseek-api-key": f"DEEPSEEK_API_KEY = 'sk-{rand(32, HEX)}'\n",
    "huggingface-token": f"HF = 'hf_{rand(34, string.ascii_letters)}'\n",
    "npm-token": f"//registry.npmjs.org/:_authToken=npm_{rand(36)}\n",
    "pypi-token": f"password = pypi-AgEIcHlwaS5vcmc{rand(60)}\n",
    "jwt": f"auth = 'eyJ{rand(20)}.eyJ{rand(40)}.{rand(43)}'\n",
    "url-credentials": f"DATABASE_URL = 'postgres://admin:{rand(20)}@db.internal:5432/app'\n",
    "secret-assignment": f"SECRET_KEY = '{rand(40)}'\n",
    "password-assignment": f'config = {{"db_password": "{rand(18)}"}}\n',
}

BENIGN = {
    "placeholder": "API_KEY = 'your-api-key-here'\nSECRET_KEY = 'changeme-changeme-changeme'\n",
    "aws-docs-example": "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
    "env-lookup": "SECRET_KEY = os.environ['SECRET_KEY']\ntoken = get_token(user)\n",
    "tokenizer-name": "tokenizer_name = 'deepseek-v4-tokenizer-2025-large'\n",
    "hash-constant": "digest = 'a8f5f167f44f4964e6c998dee827110c'\n",
    "url-without-password": "url = 'https://user@example.com/path/to/resource'\n",
    "pem-marker-in-code": "if line.startswith('-----BEGIN RSA PRIVATE KEY-----'):\n    pass\n",
    "short-password": "password = 'hunter2'\n",
    "template": "password = '${DB_PASSWORD}'\napi_key = '{{ api_key }}'\n",
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_secrets_are_found(name: str):
    assert scan_secrets(PLANTED[name]) is not None, name


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_ordinary_code_is_not_flagged(name: str):
    assert scan_secrets(BENIGN[name]) is None, name


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        (".env", "dotenv file"),
        ("config/.env.production", "dotenv file"),
        ("deploy/server.pem", "key or keystore file"),
        ("home/.ssh/id_rsa", "SSH private key"),
        ("home/.ssh/id_ed25519", "SSH private key"),
        ("home/.ssh/id_rsa.pub", None),
        (".aws/credentials", "credentials file"),
        ("gcp/service-account-prod.json", "cloud service-account key"),
        (".netrc", "credentials file"),
        ("src/environment.py", None),
        ("docs/keys.md", None),
    ],
)
def test_secret_file_names(path: str, rule: str | None):
    assert secret_name_rule(path) == rule


def test_no_false_positives_on_the_standard_library():
    """Precision on ordinary code: the stdlib (with its test suite and fake keys) has no live
    credentials; every file flagged here would be a false positive. Budget: a handful."""
    flagged = []
    for path, text in stdlib_sources():
        rule = scan_secrets(text)
        if rule:
            flagged.append((str(path.relative_to(STDLIB)), rule))
    assert len(flagged) <= 3, flagged


def _planted_repo(write_tree) -> tuple[Path, list[str]]:
    github = f"ghp_{rand(36)}"
    deepseek = f"sk-{rand(32, HEX)}"
    pem = rand(64, B64)
    files = {
        "app/settings.py": f"DEBUG = False\nGITHUB_TOKEN = '{github}'\n",
        "app/main.py": "from app import settings\n\ndef main():\n    return settings.DEBUG\n",
        ".env": f"DEEPSEEK_API_KEY={deepseek}\n",
        "deploy/id_rsa": f"-----BEGIN RSA PRIVATE KEY-----\n{pem}\n-----END RSA PRIVATE KEY-----\n",
        "README.md": "# planted\n",
    }
    return write_tree(files, git_init=True, commit=True), [github, deepseek, pem]


def test_planted_secrets_never_reach_any_output(write_tree, tmp_path: Path):
    root, secrets = _planted_repo(write_tree)
    out_file = tmp_path / "pack.xml"
    runs = []
    for fmt in ("json", "text"):
        proc = v4code(
            "context",
            "--repo",
            str(root),
            "--output",
            str(out_file),
            "--output-format",
            fmt,
            "--verbose",
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(proc.stdout + proc.stderr + out_file.read_text(encoding="utf-8"))
    manifest = json.loads(runs[0][: runs[0].index("\n") + 1])
    reasons = {e["path"]: e["reason"] for e in manifest["excluded"]}
    assert reasons["app/settings.py"] == "secret: github-token (by content)"
    assert reasons[".env"].startswith("secret: dotenv file")
    assert reasons["deploy/id_rsa"].startswith("secret: SSH private key")
    assert [f["path"] for f in manifest["files"]] == ["README.md", "app/main.py"]
    for blob in runs:
        for secret in secrets:
            assert secret not in blob
    # markdown text through the library as well
    pack = pack_repository(root, fmt="markdown")
    assert not any(secret in pack.text for secret in secrets)


def test_explicit_include_overrides_the_secret_rules(write_tree):
    root, secrets = _planted_repo(write_tree)
    pack = pack_repository(root, include=["app/settings.py"])
    assert secrets[0] in pack.text  # detection, not something else, kept it out before
    assert secrets[1] not in pack.text and secrets[2] not in pack.text


def test_secrets_in_files_that_would_be_skeletonised_or_listed(stdlib_repo):
    """Files whose content enters the pack in any form (whole or skeleton) are scanned in
    full: a secret in a function body that a skeleton would drop still excludes the file. A
    listed file contributes only its path and size."""
    root = stdlib_repo(["json", "email"])
    body_secret = f"ghp_{rand(36)}"
    listed_secret = f"xoxb-{rand(11, string.digits)}-{rand(12, string.digits)}-{rand(24)}"
    big = root / "src/json/decoder.py"
    big.write_text(
        big.read_text().replace(
            "def py_scanstring(",
            f"def _leak():\n    return '{body_secret}'\n\n\ndef py_scanstring(",
        )
    )
    data = root / "zz_data/records.csv"
    data.parent.mkdir()
    data.write_text(f"id,token\n1,{listed_secret}\n" + "2,plain\n" * 2000)
    pack = pack_repository(root, budget=25_000)
    modes = {f.path: f.mode for f in pack.files}
    assert "skeleton" in modes.values() and modes.get("zz_data/records.csv") == "listed"
    reasons = {e.path: e.reason for e in pack.excluded}
    assert reasons["src/json/decoder.py"] == "secret: github-token (by content)"
    assert body_secret not in pack.text and listed_secret not in pack.text
    assert any(p.startswith("src/json/") for p in modes)  # the rest of the package is still in


# The assignment rule as first written: a forward search through the 80 characters before each
# quoted value. The engine reads the same text backwards with one anchored match (faster); the
# two must agree.
_FORWARD_NAME = re.compile(
    r"""(?:(?i:secret|token|passw(?:or)?d|pwd|passphrase|credentials?|api[_\-]?key|apikey"""
    r"""|access[_\-]?key|private[_\-]?key|auth[_\-]?key|signing[_\-]?key|encryption[_\-]?key"""
    r"""|master[_\-]?key)|(?<![A-Za-z0-9])[A-Z0-9]+_KEY)s?['"\]]?[ \t]*(?:=>|:=|[:=])[ \t]*[bru]?$"""
)


def test_backward_name_match_agrees_with_the_forward_rule():
    names = [
        "secret", "SECRET", "client_secrets", "Secrets", "token", "tokens", "access-key",
        "accesskey", "API_KEY", "api-key", "ApiKey", "FOO_KEY", "fooKEY", "x_KEY", "AB1_KEY",
        "a.B_KEY", "passwd", "password", "PASSWORDS", "pwd", "PassPhrase", "credentials",
        "credentialss", "master_key", "signing-key", "encryptionKey", "auth__key", "keys",
        "monkey", "secretary", "tokenizer", "SECRET_KEYS", "9_KEY", "é_KEY", "",
    ]  # fmt: skip
    tails = ["", "'", '"', "]", "']", "s"]
    ops = ["=", ":", ":=", "=>", "==", ">", " = ", "\t:\t", "-", "  =  "]
    prefixes = ["", "b", "r", "u", "f", " b"]
    leads = ["", " ", "self.", "x = {", "os.environ['", "9", "é"]
    checked = 0
    for name in names:
        for tail in tails:
            for op in ops:
                for prefix in prefixes:
                    for lead in leads:
                        text = lead + name + tail + op + prefix
                        forward = _FORWARD_NAME.search(text, max(0, len(text) - 80), len(text))
                        backward = secrets_module._NAME_BEFORE_REVERSED.match(text[-80:][::-1])
                        assert bool(forward) == bool(backward), text
                        checked += 1
    assert checked > 50_000
