"""Parses docker-compose.yml (Docker cannot run on the CI machine) and checks the wiring the
design intends: LobeChat → lyss (OPENAI_PROXY_URL) → Postgres and Redis, secrets required
from the environment, the lyss config mounted, ports published.

Run by tests/tests/deploy.rs with the repository root as argument.
"""

import os
import sys

import yaml

root = sys.argv[1]
with open(os.path.join(root, "docker-compose.yml")) as f:
    compose = yaml.safe_load(f)

services = compose["services"]
assert set(services) == {"postgres", "redis", "lyss", "lobechat"}, services.keys()

lyss = services["lyss"]
env = lyss["environment"]
assert env["LYSS_DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["LYSS_DATABASE_URL"], env
assert env["LYSS_REDIS_URL"] == "redis://redis:6379", env
for secret in ("LYSS_ADMIN_TOKEN", "LYSS_MASTER_KEY"):
    assert ":?" in env[secret], f"{secret} must be required, not defaulted: {env[secret]}"
assert lyss["depends_on"]["postgres"]["condition"] == "service_healthy"
assert lyss["depends_on"]["redis"]["condition"] == "service_healthy"
assert "8080:8080" in lyss["ports"]
mounted = [v.split(":")[0] for v in lyss["volumes"]]
assert "./deploy/lyss.toml" in mounted, mounted
assert os.path.exists(os.path.join(root, "deploy", "lyss.toml"))

lobe = services["lobechat"]["environment"]
assert lobe["OPENAI_PROXY_URL"] == "http://lyss:8080/v1", lobe
assert "lyss" in services["lobechat"]["depends_on"]

with open(os.path.join(root, "Dockerfile")) as f:
    dockerfile = f.read()
for needed in ("scripts/fetch-models.sh", "lyss-server", "EXPOSE 8080", "USER lyss"):
    assert needed in dockerfile, needed
assert os.path.exists(os.path.join(root, "scripts", "fetch-models.sh"))

print("docker-compose.yml and Dockerfile: ok")
