#!/usr/bin/env bash
# Debian/Ubuntu packages the project needs: installed when run as root, else named in one line.
# Usage: scripts/system-deps.sh demo|test
set -euo pipefail
mode=${1:-test}
need=(python3-venv libglib2.0-dev pkg-config)
if [ "$mode" = test ]; then
  need+=(chromium docker-compose redis-server npm)
fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A newcomer's machine may already provide some of these outside dpkg.
if [ ${#missing[@]} -gt 0 ]; then
  filtered=()
  for p in "${missing[@]}"; do
    case "$p" in
      chromium) command -v chromium >/dev/null || filtered+=("$p") ;;
      docker-compose) command -v docker-compose >/dev/null || filtered+=("$p") ;;
      redis-server) command -v redis-server >/dev/null || filtered+=("$p") ;;
      npm) command -v npm >/dev/null || filtered+=("$p") ;;
      *) filtered+=("$p") ;;
    esac
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing system packages (install them as root): sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
