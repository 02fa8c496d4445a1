#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster:
#
#   compose     docker-compose config -q on deploy/docker-compose.yml (with the example
#               settings filled in), and that it refuses to start without passwords
#   scripts     shellcheck on every shell script of the repository
#   k8s         every manifest under deploy/k8s parses, names itself, and its
#               workloads have images, HTTPS probes, resources and a non-root context
#   workflows   every workflow under .github/workflows parses and has jobs
#   dockerfile  deploy/Dockerfile has a non-root USER, a HEALTHCHECK, a VOLUME, and
#               the files it copies exist
#   systemd     systemd-analyze verify on deploy/systemd (skipped where it is missing)
#
# Installs what it lacks with apt-get (docker-compose, shellcheck, python3-yaml),
# through sudo when not root. Prints one line per check and a summary, and exits
# non-zero when any check failed.
#
# The script list comes from `git ls-files '*.sh'`, plus .ci/run and every script under
# deploy/ and tests/ (new ones are not tracked yet). DEPLOY_CHECK_NO_GIT=1, or a tree
# without git, lists them with find instead.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
work=$(mktemp -d /tmp/deploy-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0
apt_updated=""

pass() { passed=$((passed + 1)); printf 'ok    %-10s %s\n' "$1" "$2"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %-10s %s\n' "$1" "$2"; }
skip() { skipped=$((skipped + 1)); printf 'skip  %-10s %s\n' "$1" "$2"; }
# show FILE: a failed tool's output, indented under its line.
show() { sed 's/^/      | /' "$1"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    command -v apt-get >/dev/null || return 1
    if [[ -z $apt_updated ]]; then
        as_root apt-get update -qq >/dev/null 2>&1 || return 1
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# --- compose ------------------------------------------------------------------------

compose=()
find_compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose)
    elif docker compose version >/dev/null 2>&1; then
        compose=(docker compose)
    else
        return 1
    fi
}

check_compose() {
    local file=deploy/docker-compose.yml
    if ! find_compose; then
        apt_install docker-compose || true
        find_compose || { fail compose "docker-compose is missing and could not be installed"; return; }
    fi
    # The example leaves passwords empty on purpose; fill them for the check only.
    sed -E 's/^([A-Z0-9_]+)=$/\1=check-only-value/' deploy/env.example >"$work/compose.env"
    if "${compose[@]}" --env-file "$work/compose.env" -f "$file" config -q >"$work/compose.out" 2>&1; then
        pass compose "$file is valid (${compose[*]})"
    else
        fail compose "$file: ${compose[*]} config"
        show "$work/compose.out"
    fi
    # Without passwords the stack must refuse to start, not run with empty ones.
    : >"$work/empty.env"
    if env -u MARIADB_ROOT_PASSWORD -u CENTER_DB_PASSWORD -u EDGE_SITE_A_DB_PASSWORD \
        -u EDGE_SITE_B_DB_PASSWORD -u FLEET_ADMIN_PASSWORD -u FLEET_EDGE_ADMIN_PASSWORD \
        "${compose[@]}" --env-file "$work/empty.env" -f "$file" config -q >/dev/null 2>&1; then
        fail compose "$file accepts empty passwords"
    else
        pass compose "$file refuses to start without passwords"
    fi
}

# --- shellcheck ---------------------------------------------------------------------

list_scripts() {
    {
        if [[ ${DEPLOY_CHECK_NO_GIT:-} != 1 ]] && command -v git >/dev/null &&
            git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git ls-files '*.sh'
        else
            find . -name '*.sh' -not -path './target/*' -not -path './.git/*' | sed 's|^\./||'
        fi
        echo .ci/run
        find deploy tests -name '*.sh' 2>/dev/null
    } | sort -u | while read -r f; do [[ -f $f ]] && echo "$f"; done
}

check_shellcheck() {
    if ! command -v shellcheck >/dev/null; then
        apt_install shellcheck || true
        command -v shellcheck >/dev/null || { fail scripts "shellcheck is missing and could not be installed"; return; }
    fi
    local scripts=() f bad=0
    mapfile -t scripts < <(list_scripts)
    : >"$work/shellcheck.out"
    # One file at a time, so a finding names its file in the summary.
    for f in "${scripts[@]}"; do
        if ! shellcheck -x "$f" >>"$work/shellcheck.out" 2>&1; then
            bad=$((bad + 1))
            echo "  ^ $f" >>"$work/shellcheck.out"
        fi
    done
    if ((bad == 0)); then
        pass scripts "${#scripts[@]} scripts are clean"
    else
        fail scripts "$bad of ${#scripts[@]} scripts have findings"
        show "$work/shellcheck.out"
    fi
}

# --- YAML: Kubernetes and workflows -------------------------------------------------

python=""
find_python() {
    local p
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import yaml' >/dev/null 2>&1; then
            python=$p
            return 0
        fi
    done
    return 1
}

check_yaml() {
    if ! find_python; then
        apt_install python3-yaml || true
        find_python || { fail k8s "python3 with PyYAML is missing and could not be installed"; return; }
    fi
    if "$python" - deploy/k8s >"$work/k8s.out" 2>&1 <<'EOF'; then
import glob, os, sys, yaml

base = sys.argv[1]
problems, docs = [], []
files = sorted(glob.glob(os.path.join(base, "*.yaml")) + glob.glob(os.path.join(base, "*.yml")))
if not files:
    problems.append(f"no manifests in {base}")
for path in files:
    try:
        loaded = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        problems.append(f"{path}: {e}")
        continue
    for d in loaded:
        where = f"{path}: {d.get('kind', '?')}/{(d.get('metadata') or {}).get('name', '?')}" if isinstance(d, dict) else path
        if not isinstance(d, dict):
            problems.append(f"{where}: not a mapping")
            continue
        for key in ("apiVersion", "kind"):
            if not isinstance(d.get(key), str) or not d[key]:
                problems.append(f"{where}: no {key}")
        if not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
            problems.append(f"{where}: no metadata.name")
        docs.append((where, d))

def named(kind):
    return {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == kind and isinstance(d.get("metadata"), dict)}

services, config_maps, secrets = named("Service"), named("ConfigMap"), named("Secret")
# Made by the operator from certificates, never kept in the repository.
external = {"center-tls", "fleet-ca"}

def probe(where, c, name, path):
    p = c.get(name)
    if not isinstance(p, dict):
        problems.append(f"{where}: container {c.get('name')} has no {name}")
        return
    get = p.get("httpGet") or {}
    if get.get("path") != path or get.get("scheme") != "HTTPS":
        problems.append(f"{where}: {name} of {c.get('name')} is not an HTTPS GET of {path}")

workloads = 0
for where, d in docs:
    if d.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
        continue
    workloads += 1
    pod = (((d.get("spec") or {}).get("template") or {}).get("spec")) or {}
    containers = pod.get("containers") or []
    if not containers:
        problems.append(f"{where}: no containers")
    pod_ctx = pod.get("securityContext") or {}
    for c in containers:
        name = c.get("name")
        if not c.get("image"):
            problems.append(f"{where}: container {name} has no image")
        probe(where, c, "livenessProbe", "/healthz")
        probe(where, c, "readinessProbe", "/readyz")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if not (res.get(part) or {}).get(what):
                    problems.append(f"{where}: container {name} has no resources.{part}.{what}")
        ctx = c.get("securityContext") or {}
        if not (ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True):
            problems.append(f"{where}: container {name} may run as root")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: container {name} allows privilege escalation")
        for ref in c.get("envFrom") or []:
            cm = (ref.get("configMapRef") or {}).get("name")
            sec = (ref.get("secretRef") or {}).get("name")
            if cm and cm not in config_maps:
                problems.append(f"{where}: ConfigMap {cm} is not defined")
            if sec and sec not in secrets:
                problems.append(f"{where}: Secret {sec} is not defined")
    for v in pod.get("volumes") or []:
        cm = (v.get("configMap") or {}).get("name")
        sec = (v.get("secret") or {}).get("secretName")
        for ref, known in ((cm, config_maps), (sec, secrets)):
            if ref and ref not in known and ref not in external:
                problems.append(f"{where}: volume {v.get('name')} refers to undefined {ref}")
    if d["kind"] == "StatefulSet":
        spec = d.get("spec") or {}
        if not spec.get("volumeClaimTemplates"):
            problems.append(f"{where}: no volumeClaimTemplates")
        svc = services.get(spec.get("serviceName"))
        if not svc or (svc.get("spec") or {}).get("clusterIP") != "None":
            problems.append(f"{where}: serviceName {spec.get('serviceName')} is not a headless Service")
if files and not workloads:
    problems.append("no Deployment or StatefulSet found")

for p in problems:
    print(p)
print(f"{len(docs)} documents, {workloads} workloads")
sys.exit(1 if problems else 0)
EOF
        pass k8s "deploy/k8s: $(tail -n 1 "$work/k8s.out")"
    else
        fail k8s "deploy/k8s"
        show "$work/k8s.out"
    fi

    if "$python" - .github/workflows >"$work/wf.out" 2>&1 <<'EOF'; then
import glob, os, sys, yaml
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.y*ml")))
bad = 0
for path in files:
    try:
        d = yaml.safe_load(open(path))
    except yaml.YAMLError as e:
        print(f"{path}: {e}"); bad += 1; continue
    # YAML 1.1 reads the key `on` as true.
    if not isinstance(d, dict) or not d.get("jobs") or not (d.get("on") or d.get(True)):
        print(f"{path}: needs `on` and `jobs`"); bad += 1
print(f"{len(files)} workflows")
sys.exit(1 if bad or not files else 0)
EOF
        pass workflows ".github/workflows: $(tail -n 1 "$work/wf.out")"
    else
        fail workflows ".github/workflows"
        show "$work/wf.out"
    fi
}

# --- Dockerfile ---------------------------------------------------------------------

check_dockerfile() {
    local file=deploy/Dockerfile problems=() user src
    [[ -f $file ]] || { fail dockerfile "$file is missing"; return; }
    # The instructions of the last stage are what the image runs with.
    awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$file" >"$work/final-stage"
    user=$(grep -E '^USER ' "$work/final-stage" | tail -n 1 | awk '{print $2}')
    case ${user%%:*} in
        '') problems+=("the final stage sets no USER") ;;
        0 | root) problems+=("the final stage runs as root") ;;
    esac
    grep -qE '^HEALTHCHECK ' "$work/final-stage" || problems+=("the final stage has no HEALTHCHECK")
    grep -qE '^VOLUME ' "$work/final-stage" || problems+=("the final stage has no VOLUME")
    grep -qE '^ARG BIN' "$file" || problems+=("no ARG BIN")
    # Every file copied from the build context must exist.
    while read -r src; do
        [[ -e $src ]] || problems+=("COPY source $src does not exist")
    done < <(grep -E '^COPY ' "$file" | grep -v -- '--from=' |
        sed -E 's/^COPY( --[a-z]+=[^ ]+)* //' | awk '{for (i = 1; i < NF; i++) print $i}' | grep -v '^\.$')
    if ((${#problems[@]} == 0)); then
        pass dockerfile "$file has USER $user, HEALTHCHECK, VOLUME"
    else
        local IFS=';'
        fail dockerfile "$file: ${problems[*]}"
    fi
}

# --- systemd ------------------------------------------------------------------------

check_systemd() {
    if ! command -v systemd-analyze >/dev/null; then
        skip systemd "systemd-analyze is not installed"
        return
    fi
    # verify wants the programs to exist: point ExecStart at stand-ins, and name an
    # instance of the template.
    local dir=$work/units unit units=()
    mkdir -p "$dir/bin"
    for unit in center-cloud edge-cloud device-agent; do ln -s /bin/true "$dir/bin/$unit"; done
    for unit in deploy/systemd/*.service; do
        sed "s#/usr/local/bin/#$dir/bin/#g" "$unit" >"$dir/$(basename "$unit")"
        case $unit in
            *@.service) ln -s "$(basename "$unit")" "$dir/$(basename "$unit" .service)check.service"
                units+=("$dir/$(basename "$unit" .service)check.service") ;;
            *) units+=("$dir/$(basename "$unit")") ;;
        esac
    done
    # Anything verify prints is a finding, even when it still exits 0.
    if systemd-analyze verify "${units[@]}" >"$work/systemd.out" 2>&1 && [[ ! -s $work/systemd.out ]]; then
        pass systemd "${#units[@]} units verify"
    else
        fail systemd "systemd-analyze verify"
        show "$work/systemd.out"
    fi
}

check_compose
check_shellcheck
check_yaml
check_dockerfile
check_systemd

echo "deploy-check: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
