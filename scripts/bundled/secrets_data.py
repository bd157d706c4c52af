"""Build the secrets / personal-data tagging data set for bigcode-tiny-secrets.

Command (from the repository root, after scripts/bundled/corpus.py)::

    /work/venv/bin/python scripts/bundled/secrets_data.py

Writes ``data/secrets/{train,eval,test}.jsonl`` with records
``{"text": ..., "spans": [{"start", "end", "label"}], "kind": ...}`` (character offsets into
``text``; ``text[start:end]`` is exactly the tagged value) and ``data/secrets/labels.json``.
Labels: EMAIL, IP_ADDRESS, KEY, PASSWORD. ``kind`` says how the record was made (``code``,
``config`` or ``negative``) for per-kind metrics; it is not a model input.

How records are made:

- ``code``: a window of real code (4..25 lines) from the corpus, with 1..3 secret-bearing lines
  inserted at random line positions, written in the window's language (Python, JavaScript /
  TypeScript, shell, Go, Java, Rust, Ruby, Perl, C) and indented like the line they precede:
  assignments, config dicts and objects, env exports, connection URLs, HTTP headers, comments,
  PEM blocks, CLI invocations.
- ``config``: a synthetic configuration file (.env, YAML, INI, JSON, .pgpass, .netrc, HTTP
  request) mixing secret and ordinary settings.
- ``negative``: a real code window with no inserted secrets, often with decoys.
About a quarter of code and config records also carry decoys.

Labelling decisions (applied the same way everywhere):

- KEY: the token itself, without quotes or prefixes such as ``Bearer `` or ``token ``: API keys
  (sk-, sk_live_, AIza, xoxb-), GitHub tokens (ghp_, gho_, github_pat_), AWS access key ids and
  secret keys, JWTs, hex and base64 tokens, and for PEM private keys the whole base64 body
  (from the first body character to the last, newlines included, BEGIN/END lines excluded).
- PASSWORD: a literal password value (in a URL, only the password part of ``user:pass@``).
  User names and host names are never tagged.
- EMAIL: every e-mail address, wherever it is (including ones already in the real code;
  ``git@github.com:`` SSH remotes are not e-mail addresses).
- IP_ADDRESS: every IPv4 literal (including ones already in the real code, private ranges,
  127.0.0.1 and netmasks) except dotted numbers after the word ``version`` (within 30 chars)
  or glued to letters/dots (``v1.2.3.4``, ``1.3.6.1.4.1``); inserted IPv6 addresses.
- Not tagged (decoys): placeholders (``<your-api-key>``, ``${API_KEY}``, ``xxxx``, ``***``),
  values read from the environment or a prompt, version strings, git commit SHAs and checksums
  in checksum/commit context, UUIDs, host names, ``localhost``.

Value vocabularies (names, domains, words) are split by hash: test records draw values from a
half that train and eval never see, and use their own seed; test windows come from the corpus's
held-out files, eval windows from 10 % of the train-split files that train never uses. Every
span is validated (non-empty, in range, no overlap, no surrounding whitespace) by assertions.
Seeded (``--seed``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import re
import string
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "data" / "corpus"
OUT = REPO / "data" / "secrets"
LABELS = ["EMAIL", "IP_ADDRESS", "KEY", "PASSWORD"]

FIRST = """james mary robert patricia john jennifer michael linda david elizabeth william barbara
richard susan joseph jessica thomas sarah charles karen christopher lisa daniel nancy matthew
betty anthony margaret mark sandra donald ashley steven kimberly paul emily andrew donna joshua
michelle kenneth carol kevin amanda brian dorothy george melissa timothy deborah ronald
stephanie edward rebecca jason sharon jeffrey laura ryan cynthia jacob kathleen gary amy
nicholas angela eric shirley jonathan anna stephen brenda larry pamela justin emma scott nicole
wei li chen yuki hiroshi priya arjun fatima omar ahmed sofia lucas mateo ingrid sven olga ivan
anders chloe amelie pierre lena jonas mia noah""".split()
LAST = """smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez
lopez gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
flores green adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips evans
turner diaz parker cruz edwards collins reyes stewart morris morales murphy cook rogers gutierrez
ortiz morgan cooper peterson bailey reed kelly howard kim cox ward richardson watson brooks wood
schmidt mueller rossi tanaka suzuki sato patel singh kumar ivanova novak kowalski jensen
lindqvist dubois moreau""".split()
DOMAINS = """example.com example.org example.net acme.io acme-corp.com initech.com globex.net
umbrella.co hooli.xyz piedpiper.com contoso.com fabrikam.com northwind.io tailspin.dev
widgets.co.uk mailbox.org protonmail.com gmail.com yahoo.com outlook.com fastmail.fm
company.de firma.de societe.fr univ-lyon.fr cs.stanford.edu mit.edu ox.ac.uk tum.de
startup.ai cloudly.app datapipe.io devshop.tech shop.jp corp.internal""".split()
WORDS = """sunset river falcon maple ocean rocket tiger silver winter summer dragon shadow
purple thunder garden coffee pepper banana monkey orange cookie butter forest planet crystal
marble velvet copper amber willow harbor meadow canyon glacier ember comet lotus raven phoenix
cobalt onyx nimbus quartz saffron tundra zephyr juniper lemon mango kiwi walnut cedar spruce
bison otter badger lynx heron sparrow puffin walrus panda koala llama alpaca yak wombat gecko
iguana python jaguar puma cougar eagle hawk condor osprey kestrel merlin orbit nebula quasar
pulsar galaxy""".split()
USERS = """admin root deploy app postgres mysql svc_api jenkins ci ubuntu ec2-user service
backup monitor grafana redis etl reporting webapp ops dev""".split()
HOSTS = """db.internal api.example.com cache.local redis-master mq.prod.lan db01 pg-primary
mongo-0.mongo search.svc.cluster.local auth.acme.io gateway.corp""".split()
DBS = "app prod main analytics orders users inventory billing metrics warehouse".split()
TLDS = set("""com org net edu gov io dev de uk fr jp cn ru info biz co us ca au nl se ch it es be
at dk fi no pl cz eu me ai app tech fm xyz lan internal local""".split())

EMAIL_RE = re.compile(r"(?<![\w.@+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                      r"\.([A-Za-z]{2,10})(?![\w@-])")
IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
SAFE_PUNCT = "!#%&*+-.=?@^_~"  # no quotes, backslash, $, :, ; or ,


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def vocab_half(words: list[str], test: bool) -> list[str]:
    """The half of a vocabulary that belongs to the test side (or to train/eval)."""
    out = [w for w in words if (hashlib.sha1(w.encode()).digest()[0] % 2 == 1) == test]
    return out or words


class Values:
    """Random realistic values; test=True draws names and words the other splits never use."""

    def __init__(self, rng: random.Random, test: bool):
        self.rng = rng
        self.first = vocab_half(FIRST, test)
        self.last = vocab_half(LAST, test)
        self.domains = vocab_half(DOMAINS, test)
        self.words = vocab_half(WORDS, test)

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def name(self) -> str:
        return f"{self.rng.choice(self.first).title()} {self.rng.choice(self.last).title()}"

    def email(self, name: str | None = None) -> str:
        """An address; with a name ("Jane Doe"), one that belongs to that person."""
        r = self.rng
        f, l, d = r.choice(self.first), r.choice(self.last), r.choice(self.domains)
        if name:
            f, l = name.lower().split()[:2]
            return r.choice([f"{f}.{l}", f"{f[0]}{l}", f, f"{f}_{l}", f"{l}"]) + "@" + d
        local = r.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}_{l}{r.randint(1, 99)}", f,
                          f"{l}.{f[0]}", f"{f}+{r.choice(self.words)}",
                          r.choice(["admin", "support", "noreply", "devops", "security",
                                    "billing", "alerts", "it-help", "ops"])])
        return local + "@" + d

    def ipv4(self) -> str:
        r = self.rng
        kind = r.random()
        if kind < 0.3:
            return f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        if kind < 0.55:
            return f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}"
        if kind < 0.65:
            return f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        if kind < 0.7:
            return r.choice(["127.0.0.1", "0.0.0.0", "8.8.8.8", "1.1.1.1"])
        return (f"{r.choice([r.randint(1, 223), r.randint(11, 99)])}.{r.randint(0, 255)}."
                f"{r.randint(0, 255)}.{r.randint(1, 254)}")

    def ipv6(self) -> str:
        r = self.rng
        groups = [f"{r.randint(0, 0xffff):x}" for _ in range(8)]
        kind = r.random()
        if kind < 0.3:
            return "2001:db8:" + ":".join(groups[:2]) + "::" + groups[7]
        if kind < 0.5:
            return "fe80::" + ":".join(groups[4:])
        if kind < 0.6:
            return "::1"
        return ":".join(groups)

    def password(self, url_safe: bool = False) -> str:
        r = self.rng
        punct = "-_.~" if url_safe else SAFE_PUNCT
        kind = r.random()
        if kind < 0.35:
            w = r.choice(self.words)
            w = w.title() if r.random() < 0.6 else w
            return w + r.choice(punct) + str(r.randint(0, 9999)) + \
                (r.choice(punct) if r.random() < 0.3 else "")
        if kind < 0.7:
            return self.chars(string.ascii_letters + string.digits + punct, r.randint(8, 24))
        if kind < 0.8:
            leet = str.maketrans({"a": "4", "e": "3", "o": "0", "i": "1", "s": "5"})
            return r.choice(self.words).translate(leet) + str(r.randint(10, 99)) + \
                r.choice(punct)
        if kind < 0.9:
            return "-".join(r.choice(self.words) for _ in range(r.randint(3, 5)))
        return r.choice(self.words) + str(r.randint(1, 999))

    def b64(self, n_bytes: int, urlsafe: bool = False) -> str:
        raw = bytes(self.rng.getrandbits(8) for _ in range(n_bytes))
        return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()

    def jwt(self) -> str:
        r = self.rng
        header = {"alg": r.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
        payload = {"sub": str(r.randint(1, 10**9)), "name": self.name(),
                   "iat": r.randint(1_500_000_000, 1_800_000_000)}
        if r.random() < 0.5:
            payload["role"] = r.choice(["admin", "user", "service"])
        enc = [base64.urlsafe_b64encode(json.dumps(p, separators=(",", ":")).encode())
               .decode().rstrip("=") for p in (header, payload)]
        return ".".join(enc + [self.b64(32, urlsafe=True).rstrip("=")])

    def key(self, kind: str | None = None) -> str:
        """An API key or token; kind picks a format, None picks one at random."""
        r = self.rng
        an = string.ascii_letters + string.digits
        kind = kind or r.choice(["openai", "github", "github", "aws_id", "aws_secret", "jwt",
                                 "hex", "hex", "b64", "slack", "stripe", "google", "generic"])
        if kind == "openai":
            return r.choice(["sk-", "sk-proj-"]) + self.chars(an + "_-", r.choice([32, 48, 64]))
        if kind == "github":
            p = r.choice(["ghp_", "gho_", "ghs_", "github_pat_"])
            return p + self.chars(an, 36 if p != "github_pat_" else 82)
        if kind == "aws_id":
            return r.choice(["AKIA", "ASIA"]) + self.chars(string.ascii_uppercase + "234567", 16)
        if kind == "aws_secret":
            return self.chars(an + "+/", 40)
        if kind == "jwt":
            return self.jwt()
        if kind == "hex":
            return self.chars("0123456789abcdef", r.choice([32, 40, 64]))
        if kind == "b64":
            return self.b64(r.choice([24, 32, 48]))
        if kind == "slack":
            return (f"xox{r.choice('bpa')}-{r.randint(10**10, 10**12)}-"
                    f"{r.randint(10**10, 10**12)}-{self.chars(an, 24)}")
        if kind == "stripe":
            return r.choice(["sk_live_", "rk_live_", "sk_test_"]) + self.chars(an, 24)
        if kind == "google":
            return "AIza" + self.chars(an + "_-", 35)
        return self.chars(an, r.randint(20, 40))

    def pem(self) -> tuple[str, str]:
        """(key type, base64 body with line breaks) of a private key."""
        r = self.rng
        kind, n_bytes, width = r.choice([("EC", 121, 64), ("OPENSSH", 400, 70),
                                         ("RSA", 608, 64), ("", 138, 64)])
        body = self.b64(n_bytes)
        lines = [body[i:i + width] for i in range(0, len(body), width)]
        return kind, "\n".join(lines)


# --- templates --------------------------------------------------------------------------------
# A template is text with <<field>> markers; fields with a label become spans.
FIELD_LABEL = {"key": "KEY", "ghp": "KEY", "aws_id": "KEY", "aws_secret": "KEY", "jwt": "KEY",
               "hex": "KEY", "pem": "KEY", "pw": "PASSWORD", "pwu": "PASSWORD", "email": "EMAIL",
               "ip": "IP_ADDRESS", "ip6": "IP_ADDRESS"}
KEY_VARS = """api_key API_KEY apiKey secret_key SECRET_KEY access_token auth_token token
GITHUB_TOKEN OPENAI_API_KEY stripe_secret client_secret SLACK_BOT_TOKEN private_token
api_secret AUTH_TOKEN accessKey bearer_token service_key""".split()
PW_VARS = """password passwd pwd db_password DB_PASS POSTGRES_PASSWORD adminPassword
smtp_password MYSQL_ROOT_PASSWORD redis_password userPassword pass_word ldap_password
DATABASE_PASSWORD""".split()

PY = [
    '<<kvar>> = "<<key>>"', "<<kvar>> = '<<key>>'", '<<pvar>> = "<<pw>>"', "<<pvar>> = '<<pw>>'",
    'DATABASES = {\n    "default": {\n        "ENGINE": "django.db.backends.postgresql",\n'
    '        "HOST": "<<ip>>",\n        "USER": "<<user>>",\n        "PASSWORD": "<<pw>>",\n'
    '    }\n}',
    'config = {"host": "<<ip>>", "port": <<port>>, "user": "<<user>>", "password": "<<pw>>"}',
    'engine = create_engine("<<scheme>>://<<user>>:<<pwu>>@<<ip>>:<<port>>/<<db>>")',
    'DATABASE_URL = "<<scheme>>://<<user>>:<<pwu>>@<<host>>:<<port>>/<<db>>"',
    'headers = {"Authorization": "Bearer <<key>>"}', 'headers = {"X-Api-Key": "<<key>>"}',
    '# Maintainer: <<name>> <<<email>>>', '# questions? ask <<email>>', '# server: <<ip>>',
    'client = boto3.client(\n    "s3",\n    aws_access_key_id="<<aws_id>>",\n'
    '    aws_secret_access_key="<<aws_secret>>",\n)',
    'os.environ["GITHUB_TOKEN"] = "<<ghp>>"', 'os.environ.setdefault("<<KVAR>>", "<<key>>")',
    'server.login("<<email>>", "<<pw>>")', 'sock.connect(("<<ip>>", <<port>>))',
    'HOST = "<<ip6>>"', 'ALLOWED_HOSTS = ["<<ip>>", "localhost"]',
    'PRIVATE_KEY = """-----BEGIN <<pemkind>>PRIVATE KEY-----\n<<pem>>\n'
    '-----END <<pemkind>>PRIVATE KEY-----\n"""',
    'resp = requests.get(url, auth=("<<user>>", "<<pw>>"), timeout=10)',
    'send_mail(subject, body, "<<email>>", ["<<email>>"])', 'JWT = "<<jwt>>"',
    'r = redis.Redis(host="<<ip>>", port=6379, password="<<pw>>")',
    '__author__ = "<<name>> <<<email>>>"', 'token = "<<hex>>"  # <<email>>',
]
JS = [
    'const <<kvar>> = "<<key>>";', "let <<kvar>> = '<<key>>';", "const <<pvar>> = '<<pw>>';",
    "  password: '<<pw>>',", "  apiKey: '<<key>>',", "  host: '<<ip>>',",
    "const client = new Client({ host: '<<ip>>', user: '<<user>>', password: '<<pw>>' });",
    "mongoose.connect('mongodb://<<user>>:<<pwu>>@<<ip>>:27017/<<db>>');",
    'fetch(url, { headers: { Authorization: "Bearer <<key>>" } });',
    "axios.defaults.headers.common['Authorization'] = 'Bearer <<jwt>>';",
    "// @author <<name>> <<<email>>>", "// TODO(<<email>>): remove before release",
    'process.env.GITHUB_TOKEN = process.env.GITHUB_TOKEN || "<<ghp>>";',
    "const socket = net.connect(<<port>>, '<<ip>>');", 'const SERVER = "<<ip6>>";',
    "const transporter = nodemailer.createTransport({ auth: { user: '<<email>>', pass: '<<pw>>' } });",
    "const AWS_ACCESS_KEY_ID = '<<aws_id>>';\nconst AWS_SECRET_ACCESS_KEY = '<<aws_secret>>';",
]
SH = [
    "export <<KVAR>>=<<key>>", 'export <<KVAR>>="<<key>>"', "export <<PVAR>>='<<pw>>'",
    'curl -u <<user>>:<<pwu>> http://<<ip>>:<<port>>/api/status',
    'curl -H "Authorization: Bearer <<key>>" https://api.example.com/v1/items',
    'curl -H "Authorization: token <<ghp>>" https://api.github.com/user',
    'ssh -i ~/.ssh/id_ed25519 <<user>>@<<ip>>', 'scp build.tar.gz <<user>>@<<ip>>:/tmp/',
    'mysql -h <<ip>> -u root -p"<<pw>>" <<db>>', "PGPASSWORD='<<pw>>' psql -h <<ip>> -U <<user>> <<db>>",
    '# Contact: <<name>> <<<email>>>', '# deploy target: <<ip>>',
    'git remote add origin https://<<user>>:<<ghp>>@github.com/acme/<<db>>.git',
    'echo "<<pw>>" | docker login -u <<user>> --password-stdin registry.example.com',
    'export AWS_ACCESS_KEY_ID=<<aws_id>>\nexport AWS_SECRET_ACCESS_KEY=<<aws_secret>>',
    'ping -c 3 <<ip>>', 'ip -6 addr add <<ip6>>/64 dev eth0',
    'git config user.email "<<email>>"',
]
GO = [
    'const apiKey = "<<key>>"', '<<pvar>> := "<<pw>>"',
    'dsn := "<<user>>:<<pw>>@tcp(<<ip>>:3306)/<<db>>"', '// Author: <<name>> <<<email>>>',
    'req.Header.Set("Authorization", "Bearer <<key>>")', 'conn, err := net.Dial("tcp", "<<ip>>:<<port>>")',
    'var token = "<<ghp>>"',
]
JAVA = [
    'private static final String API_KEY = "<<key>>";', 'String password = "<<pw>>";',
    'Connection c = DriverManager.getConnection("jdbc:mysql://<<ip>>:3306/<<db>>", "<<user>>", "<<pw>>");',
    ' * @author <<name>> (<<email>>)', 'conn.setRequestProperty("Authorization", "Bearer <<jwt>>");',
    'InetAddress addr = InetAddress.getByName("<<ip>>");',
]
RUST = [
    'let token = "<<key>>";', 'const PASSWORD: &str = "<<pw>>";', 'let addr = "<<ip>>:<<port>>";',
    '// maintainer: <<email>>', '.header("Authorization", "Bearer <<key>>")',
]
RUBY = [
    "API_KEY = '<<key>>'", "  password: '<<pw>>',", "# Author: <<name>> <<<email>>>",
    "conn = PG.connect(host: '<<ip>>', user: '<<user>>', password: '<<pw>>')",
]
PERL = [
    "my $password = '<<pw>>';", 'my $dbh = DBI->connect("dbi:Pg:dbname=<<db>>;host=<<ip>>", "<<user>>", "<<pw>>");',
    "# Author: <<name>> <<<email>>>", "my $api_key = '<<key>>';",
]
C = [
    '#define API_KEY "<<key>>"', 'static const char *password = "<<pw>>";',
    'inet_pton(AF_INET, "<<ip>>", &addr.sin_addr);', '/* Maintainer: <<name>> <<<email>>> */',
]
TEMPLATES = {"python": PY, "javascript": JS, "typescript": JS, "shell": SH, "go": GO,
             "java": JAVA, "rust": RUST, "ruby": RUBY, "perl": PERL, "c": C}
COMMENT = {"python": "#", "shell": "#", "ruby": "#", "perl": "#"}  # others: //

DECOYS = {
    "python": ['<<kvar>> = os.environ["<<KVAR>>"]', '<<pvar>> = getpass.getpass("Password: ")',
               '<<kvar>> = "<your-api-key>"', '__version__ = "<<ver>>"', 'VERSION = "<<ver4>>"',
               'COMMIT = "<<sha>>"  # git rev-parse HEAD', 'sha256 = "<<sha256>>"',
               'request_id = "<<uuid>>"', 'BASE_URL = "https://<<host>>/api"',
               '<<pvar>> = os.getenv("<<PVAR>>", "")', '<<kvar>> = None  # set in settings_local.py',
               'HOST = "localhost"', 'password = "********"'],
    "javascript": ['const <<kvar>> = process.env.<<KVAR>>;', "version: '<<ver>>',",
                   "const apiKey = 'YOUR_API_KEY';", "const commit = '<<sha>>';",
                   "const id = '<<uuid>>';", "const url = `https://${host}/api`;"],
    "shell": ['export <<KVAR>>="${<<KVAR>>:?must be set}"', 'read -s -p "Password: " <<PVAR>>',
              'VERSION=<<ver>>', 'echo "sha256: <<sha256>>"', 'git checkout <<sha>>',
              'export <<PVAR>>=xxxx', 'curl https://<<host>>/health'],
    "other": ['<<c>> version <<ver4>>', '<<c>> checksum <<sha256>>', '<<c>> id <<uuid>>'],
}


class Renderer:
    """Fills templates with values and records the labelled spans."""

    def __init__(self, values: Values):
        self.v = values

    def field(self, name: str) -> str:
        v, r = self.v, self.v.rng
        table = {
            "key": v.key, "ghp": lambda: v.key("github"), "aws_id": lambda: v.key("aws_id"),
            "aws_secret": lambda: v.key("aws_secret"), "jwt": v.jwt, "hex": lambda: v.key("hex"),
            "pw": v.password, "pwu": lambda: v.password(url_safe=True), "email": v.email,
            "ip": v.ipv4, "ip6": v.ipv6, "name": v.name, "user": lambda: r.choice(USERS),
            "host": lambda: r.choice(HOSTS), "db": lambda: r.choice(DBS),
            "port": lambda: str(r.choice([5432, 3306, 6379, 27017, 8080, 443, 22, 5672, 9200])),
            "scheme": lambda: r.choice(["postgresql", "postgres", "mysql", "mongodb", "redis",
                                        "amqp", "mysql+pymysql"]),
            "kvar": lambda: r.choice(KEY_VARS), "pvar": lambda: r.choice(PW_VARS),
            "KVAR": lambda: r.choice(KEY_VARS).upper(), "PVAR": lambda: r.choice(PW_VARS).upper(),
            "ver": lambda: f"{r.randint(0, 12)}.{r.randint(0, 30)}.{r.randint(0, 40)}",
            "ver4": lambda: f"{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)}",
            "sha": lambda: v.chars("0123456789abcdef", 40),
            "sha256": lambda: v.chars("0123456789abcdef", 64),
            "uuid": lambda: "-".join(v.chars("0123456789abcdef", n) for n in (8, 4, 4, 4, 12)),
        }
        return table[name]()

    def render(self, template: str) -> tuple[str, list[dict]]:
        """(text, spans) of a template; <<pem>> and <<pemkind>> share one key."""
        out, spans, pos = [], [], 0
        recent_name = None
        pem = self.v.pem() if "<<pem" in template else None
        for i, piece in enumerate(re.split(r"<<(\w+)>>", template)):
            if i % 2 == 1:
                if piece == "pem":
                    value = pem[1]
                elif piece == "pemkind":
                    value = pem[0] + " " if pem[0] else ""
                elif piece == "email" and recent_name:
                    value = self.v.email(recent_name)
                else:
                    value = self.field(piece)
                if piece == "name":
                    recent_name = value
                label = FIELD_LABEL.get(piece)
                if label:
                    spans.append({"start": pos, "end": pos + len(value), "label": label})
                piece = value
            out.append(piece)
            pos += len(piece)
        return "".join(out), spans


def config_file(rd: Renderer) -> tuple[str, list[dict]]:
    """A synthetic configuration file with secrets among ordinary settings."""
    r = rd.v.rng
    style = r.choice(["env", "yaml", "yaml", "ini", "json", "pgpass", "netrc", "http", "compose"])
    ordinary = {"DEBUG": lambda: r.choice(["true", "false", "0", "1"]),
                "LOG_LEVEL": lambda: r.choice(["info", "debug", "warning"]),
                "PORT": lambda: str(r.choice([80, 8000, 8080, 3000, 5000])),
                "APP_NAME": lambda: r.choice(DBS) + "-service", "WORKERS": lambda: str(r.randint(1, 16)),
                "TIMEOUT": lambda: str(r.randint(5, 120)), "REGION": lambda: r.choice(["us-east-1", "eu-west-1", "ap-south-1"])}
    secret = [("<<KVAR>>", "<<key>>"), ("<<PVAR>>", "<<pw>>"), ("DB_HOST", "<<ip>>"),
              ("ADMIN_EMAIL", "<<email>>"), ("AWS_ACCESS_KEY_ID", "<<aws_id>>"),
              ("AWS_SECRET_ACCESS_KEY", "<<aws_secret>>"), ("GITHUB_TOKEN", "<<ghp>>"),
              ("DATABASE_URL", "<<scheme>>://<<user>>:<<pwu>>@<<ip>>:<<port>>/<<db>>"),
              ("JWT_SECRET", "<<hex>>"), ("DB_HOST", "<<host>>"), ("BIND_ADDR", "<<ip6>>"),
              ("VERSION", "<<ver>>"), ("BUILD_SHA", "<<sha>>")]
    items = [(k, f()) for k, f in r.sample(sorted(ordinary.items()), r.randint(1, 4))]
    items += r.sample(secret, r.randint(1, 5))
    r.shuffle(items)

    def key_name(k: str, lower: bool) -> str:
        k = rd.field(k[2:-2]) if k.startswith("<<") else k
        return k.lower() if lower else k

    if style == "env":
        t = "\n".join(f"{key_name(k, False)}={v}" for k, v in items)
    elif style == "yaml":
        t = f"{r.choice(DBS)}:\n" + "\n".join(f"  {key_name(k, True)}: {v}" for k, v in items)
    elif style == "compose":
        t = (f"services:\n  {r.choice(DBS)}:\n    image: postgres:<<ver>>\n    environment:\n"
             + "\n".join(f"      - {key_name(k, False)}={v}" for k, v in items))
    elif style == "ini":
        t = f"[{r.choice(['database', 'server', 'auth', 'default'])}]\n" + \
            "\n".join(f"{key_name(k, True)} = {v}" for k, v in items)
    elif style == "json":
        t = "{\n" + ",\n".join(f'  "{key_name(k, True)}": "{v}"' for k, v in items) + "\n}"
    elif style == "pgpass":
        t = "\n".join("<<ip>>:5432:<<db>>:<<user>>:<<pw>>" for _ in range(r.randint(1, 3)))
    elif style == "netrc":
        t = "\n".join("machine <<host>>\n  login <<user>>\n  password <<pw>>"
                      for _ in range(r.randint(1, 2)))
    else:
        t = ("POST /api/v1/<<db>> HTTP/1.1\nHost: <<ip>>:<<port>>\n"
             "Authorization: Bearer <<jwt>>\nContent-Type: application/json\n\n"
             '{"email": "<<email>>"}')
    return rd.render(t)


def code_lines_of(path: str, cache: dict[str, list[str]]) -> list[str]:
    if path not in cache:
        cache[path] = (CORPUS / path).read_text(encoding="utf-8").splitlines(keepends=True)
    return cache[path]


def real_window(lines: list[str], rng: random.Random) -> list[str] | None:
    """4..25 lines (at most 1200 characters) of real code, or None if too empty."""
    if len(lines) < 4:
        return None
    n = rng.randint(4, 25)
    start = rng.randrange(0, max(1, len(lines) - n + 1))
    out, size = [], 0
    for line in lines[start:start + n]:
        if size + len(line) > 1200:
            break
        out.append(line if line.endswith("\n") else line + "\n")
        size += len(line)
    if len(out) < 3 or len("".join(out).strip()) < 40:
        return None
    return out


def indent_block(text: str, spans: list[dict], indent: str) -> tuple[str, list[dict]]:
    """Indent every line of text (PEM bodies inside spans too); move the spans to match."""
    out, new_pos, size = [indent], [], len(indent)
    for i, ch in enumerate(text):
        new_pos.append(size)
        out.append(ch)
        size += 1
        if ch == "\n" and i + 1 < len(text):
            out.append(indent)
            size += len(indent)
    moved = [{"start": new_pos[sp["start"]], "end": new_pos[sp["end"] - 1] + 1,
              "label": sp["label"]} for sp in spans]
    return "".join(out), moved


def detect_existing(text: str, spans: list[dict]) -> list[dict]:
    """Add EMAIL / IP_ADDRESS spans for addresses already present in text (see the rules)."""
    taken = [(s["start"], s["end"]) for s in spans]

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in taken)

    extra = []
    for m in EMAIL_RE.finditer(text):
        if m.group(1).lower() not in TLDS or m.group(0).startswith("git@") or \
                text[m.end():m.end() + 1] == ":":
            continue
        if free(m.start(), m.end()):
            extra.append({"start": m.start(), "end": m.end(), "label": "EMAIL"})
            taken.append((m.start(), m.end()))
    for m in IPV4_RE.finditer(text):
        if any(int(x) > 255 for x in m.group(0).split(".")):
            continue
        if "version" in text[max(0, m.start() - 30):m.start()].lower():
            continue
        if free(m.start(), m.end()):
            extra.append({"start": m.start(), "end": m.end(), "label": "IP_ADDRESS"})
            taken.append((m.start(), m.end()))
    return sorted(spans + extra, key=lambda s: s["start"])


def check(record: dict) -> None:
    """Assert that every span is valid."""
    text, prev_end = record["text"], 0
    for s in record["spans"]:
        assert s["label"] in LABELS, s
        assert 0 <= s["start"] < s["end"] <= len(text), s
        assert s["start"] >= prev_end, ("overlap", s, record["spans"])
        value = text[s["start"]:s["end"]]
        assert value.strip() == value and value, (value, s)
        prev_end = s["end"]


def make_record(kind: str, lang: str, lines: list[str] | None, rd: Renderer) -> dict:
    """One record of the given kind built on a real code window (lines)."""
    r = rd.v.rng
    if kind == "config":
        text, spans = config_file(rd)
        return {"text": text, "spans": detect_existing(text, spans), "kind": kind}
    pieces: list[tuple[str, list[dict]]] = [(l, []) for l in lines]
    decoys = DECOYS.get(lang if lang != "typescript" else "javascript", DECOYS["other"])
    inserts: list[tuple[str, list[dict]]] = []
    if kind == "code":
        for _ in range(r.choice([1, 1, 1, 2, 2, 3])):
            if r.random() < 0.15:  # a comment with an address works in every language
                c = COMMENT.get(lang, "//")
                inserts.append(rd.render(f"{c} " + r.choice(["contact <<email>>", "host <<ip>>",
                                                          "owner: <<name>> <<<email>>>"])))
            else:
                inserts.append(rd.render(r.choice(TEMPLATES[lang])))
    if kind == "negative" or r.random() < 0.25:
        for _ in range(r.choice([1, 1, 2]) if kind == "negative" else 1):
            inserts.append(rd.render(r.choice(decoys).replace("<<c>>", COMMENT.get(lang, "//"))))
    if kind == "negative" and lang not in DECOYS and r.random() < 0.5:
        inserts = []
    for block, bspans in inserts:
        pos = r.randint(0, len(pieces))
        neighbour = pieces[pos][0] if pos < len(pieces) else (pieces[-1][0] if pieces else "")
        indent = re.match(r"[ \t]*", neighbour).group(0)
        block, bspans = indent_block(block, bspans, indent)
        pieces.insert(pos, (block + "\n", bspans))
    text, spans, offset = "", [], 0
    for piece, pspans in pieces:
        spans += [{"start": s["start"] + offset, "end": s["end"] + offset, "label": s["label"]}
                  for s in pspans]
        text += piece
        offset += len(piece)
    stripped = text.rstrip("\n")
    return {"text": stripped, "spans": detect_existing(stripped, spans), "kind": kind}


LANG_WEIGHTS = {"python": 50, "javascript": 13, "typescript": 5, "shell": 10, "go": 5,
                "java": 5, "rust": 4, "ruby": 3, "perl": 2, "c": 3}


def build_split(n: int, files: dict[str, list[str]], rng: random.Random, test_values: bool,
                cache: dict[str, list[str]]) -> list[dict]:
    """n records: 55 % code with secrets, 20 % config files, 25 % negatives."""
    rd = Renderer(Values(rng, test_values))
    langs = [l for l in LANG_WEIGHTS if files.get(l)]
    weights = [LANG_WEIGHTS[l] for l in langs]
    out, seen = [], set()
    while len(out) < n:
        u = rng.random()
        kind = "code" if u < 0.55 else ("config" if u < 0.75 else "negative")
        lang = rng.choices(langs, weights)[0]
        lines = None
        if kind != "config":
            lines = real_window(code_lines_of(rng.choice(files[lang]), cache), rng)
            if lines is None:
                continue
        rec = make_record(kind, lang, lines, rd)
        if rec["text"] in seen:
            continue
        seen.add(rec["text"])
        rec["lang"] = lang if kind != "config" else "config"
        check(rec)
        out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(CORPUS / "manifest.jsonl") as f:
        records = [json.loads(line) for line in f]
    files: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["lang"] not in LANG_WEIGHTS:
            continue
        if r["split"] == "heldout":
            side = "test"
        else:
            h = int(hashlib.sha1(f"secrets-eval:{r['path']}".encode()).hexdigest(), 16)
            side = "eval" if h % 100 < 10 else "train"
        files[side][r["lang"]].append(r["path"])
    OUT.mkdir(parents=True, exist_ok=True)
    cache: dict[str, list[str]] = {}
    for i, (side, n) in enumerate((("train", args.train), ("eval", args.eval),
                                   ("test", args.test))):
        rng = random.Random(f"{args.seed}:{side}")
        rows = build_split(n, files[side], rng, side == "test", cache)
        with open(OUT / f"{side}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        labels = Counter(s["label"] for row in rows for s in row["spans"])
        kinds = Counter(row["kind"] for row in rows)
        empty = sum(1 for row in rows if not row["spans"])
        log(f"{side}: {len(rows)} records ({dict(kinds)}), {empty} without spans, "
            f"spans {dict(sorted(labels.items()))}, mean {sum(len(r['text']) for r in rows) / len(rows):.0f} chars")
    (OUT / "labels.json").write_text(json.dumps(LABELS) + "\n")


if __name__ == "__main__":
    main()
