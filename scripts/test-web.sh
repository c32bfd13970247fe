#!/usr/bin/env bash
# The browser test (make test-web): Debian's chromium driven by
# playwright-core against a real nixbus. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi
command -v node >/dev/null || { echo "node and npm are needed (apt-get install nodejs npm)" >&2; exit 1; }
(cd e2e/web && npm ci --no-audit --no-fund)
NIXBUS_BROWSER_TEST=1 ${GO:-go} test -count=1 -timeout 10m -run '^TestWebInBrowser$' ./e2e/
echo "screenshots: e2e/web/artifacts/"
