"""Secret detection: planted secrets are found (by rule), ordinary code is not flagged, and a
secret never reaches the packed text, the JSON manifest, the summary or an --output file."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest

from agent.context import pack_repository, scan_secrets
from agent.context.rules import secret_name_rule
from tests.context.conftest import STDLIB

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
    for path in sorted(STDLIB.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
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
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "context",
                "--repo",
                str(root),
                "--output",
                str(out_file),
                "--output-format",
                fmt,
                "--verbose",
            ],
            capture_output=True,
            text=True,
            timeout=120,
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
