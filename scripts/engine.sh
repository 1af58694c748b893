#!/usr/bin/env bash
# Builds the real Pulumi engine from its Go modules, at the versions the venv's Python SDKs have
# (so the engine, the plugins and the SDKs cannot drift apart):
#   pulumi                  github.com/pulumi/pulumi/pkg/v3, cmd/pulumi (at the venv's `pulumi`)
#   pulumi-language-python  github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3, with the
#                           scripts it runs (pulumi-language-python-exec, pulumi-resource-pulumi-python, ...)
#   pulumi-resource-NAME    github.com/pulumi/pulumi-NAME/provider[/vN], cmd/pulumi-resource-NAME, at the
#                           version the venv's pulumi_NAME asks for (its pulumi-plugin.json)
#
# Usage: scripts/engine.sh [VENV]        VENV: default venv/ of this checkout
#        PATH="$(scripts/engine.sh | tail -1):$PATH"
# Progress goes to stderr; the last line (stdout) is the directory holding the binaries.
#
# Core set: pulumi, pulumi-language-python, command, random, tls. If one of them cannot be built the
# script says so on one line naming the module, still prints the directory (with what was built) and
# exits 1. docker and cloudflare are tried too, but their failure is a one-line warning and exit 0:
# Pulumi builds them against a patched Terraform provider checked out as a git submodule (../upstream),
# which no Go module carries, so the unpatched upstream module from the proxy is the best a Go-module
# build can do. A failed docker/cloudflare build is remembered per version (CACHELAYER_ENGINE_RETRY=1
# tries again); a failed core module is tried again on every run.
#
# Cache (outside the checkout, so every clone and CI run reuses it; a rerun builds nothing new):
#   ${CACHELAYER_ENGINE_CACHE:-/var/cache/cachelayer-engine}  (~/.cache/cachelayer-engine if not writable)
#     go/mod, go/build        GOMODCACHE and GOCACHE
#     modules/NAME-VERSION/   one built module: bin/, build.log (.built, or .failed with the reason)
#     KEY/bin                 the binaries of one version set (hard links), KEY naming every version
# Cost on 2 cores: a cold pulumi build takes about 8 minutes (1.9 GB peak RSS, 3.2 GB of Go caches);
# a rerun with everything built takes seconds, a relink from warm Go caches about 30 s.
# CACHELAYER_ENGINE_PULUMI_VERSION=X.Y.Z builds the CLI and the language host at X.Y.Z instead of the
# venv's pulumi (an escape hatch for a Go proxy that lacks that release; the providers never move).
set -euo pipefail

RECIPE=1 # bump when the way a module is built changes: rebuilds every module once
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/venv}
py=$venv/bin/python
if [ ! -x "$py" ]; then
    echo "engine.sh: no Python at $py (create the venv with scripts/setup.sh, or pass its path)" >&2
    exit 2
fi
command -v go >/dev/null || { echo "engine.sh: the go command is not on PATH" >&2; exit 2; }

cache=${CACHELAYER_ENGINE_CACHE:-/var/cache/cachelayer-engine}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
    [ -z "${CACHELAYER_ENGINE_CACHE:-}" ] || { echo "engine.sh: cannot write $cache" >&2; exit 2; }
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/cachelayer-engine
    mkdir -p "$cache"
fi
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build
export GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0 GO111MODULE=on
mkdir -p "$GOMODCACHE" "$GOCACHE" "$cache/modules"
# One build at a time per cache (two CI runs on one machine share it).
exec 9>"$cache/.lock"
flock 9

say() { echo "engine.sh: $*" >&2; }
elapsed() { local s=$(($(date +%s) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# The versions to build, from the venv: pulumi's, and for each provider the plugin version its SDK
# asks the engine for (pulumi-plugin.json), which is the package's own version.
versions=$("$py" - <<'PY'
import importlib.metadata as md, json, pathlib
print("pulumi", md.version("pulumi"))
for name in ("command", "random", "tls", "docker", "cloudflare"):
    try:
        dist = md.distribution(f"pulumi_{name}")
    except md.PackageNotFoundError:
        print(name, "-")
        continue
    version = dist.version
    plugin = pathlib.Path(str(dist.locate_file(f"pulumi_{name}/pulumi-plugin.json")))
    if plugin.is_file():
        version = json.loads(plugin.read_text()).get("version") or version
    print(name, version)
PY
) || { echo "engine.sh: cannot read the Pulumi SDK versions from $venv" >&2; exit 2; }
declare -A want=()
while read -r name version; do
    want[$name]=$version
done <<<"$versions"
cli_version=${CACHELAYER_ENGINE_PULUMI_VERSION:-${want[pulumi]}}
if [ "$cli_version" != "${want[pulumi]}" ]; then
    say "WARNING: pulumi CLI and language host at $cli_version (CACHELAYER_ENGINE_PULUMI_VERSION), the venv's SDK is ${want[pulumi]}"
fi

core=(pulumi language-python command random tls)
optional=(docker cloudflare)
key="pulumi-$cli_version"
for name in command random tls docker cloudflare; do
    [ "${want[$name]}" = - ] || key+="_$name-${want[$name]}"
done
key+="_r$RECIPE"

# A scratch directory for `go` queries made outside any module.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# go_in DIR LOG ARGS...: runs go in DIR, appending its output to LOG.
go_in() {
    local dir=$1 log=$2
    shift 2
    echo "+ go $*" >>"$log"
    (cd "$dir" && go "$@") >>"$log" 2>&1
}

# json_field FILE FIELD.PATH: prints one field of a JSON file ("" when absent).
json_field() {
    "$py" -c 'import json,sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print(v or "")' "$1" "$2"
}

# download MODULE@VERSION LOG: downloads one module; prints the path of `go mod download -json`'s output.
download() {
    local out
    out=$(mktemp -p "$scratch")
    echo "+ go mod download -json $1" >>"$2"
    if ! (cd "$scratch" && go mod download -json "$1") >"$out" 2>>"$2"; then
        json_field "$out" Error >>"$2" # -json reports the error on stdout
        return 1
    fi
    echo "$out"
}

# release_version REPO VERSION: how the Go proxy names the repository root (which has no go.mod) at a
# release tag: vX.Y.Z+incompatible from v2 on.
release_version() {
    case $2 in
    v0.* | v1.*) echo "$1@$2" ;;
    *) echo "$1@$2+incompatible" ;;
    esac
}

# resolve MODULE VERSION LOG SOURCES...: prints the version of MODULE for release VERSION of its
# repository: VERSION when the module has that tag, else the pseudo-version of the release commit, which
# the first of SOURCES (module@version, the release as another module) that the proxy serves names in
# its .info (Origin.Hash). The repository root at the release tag comes first: a release's sdk/ tag
# may sit on a commit that holds only sdk/ (pulumi-random's do).
resolve() {
    local mod=$1 version=$2 log=$3 source info hash=
    shift 3
    if go_in "$scratch" "$log" list -m -f '{{.Version}}' "$mod@$version"; then
        echo "$version"
        return
    fi
    for source in "$@"; do
        echo "($mod has no tag $version: looking for the release commit in $source)" >>"$log"
        info=$(download "$source" "$log") || continue
        hash=$(json_field "$(json_field "$info" Info)" Origin.Hash)
        [ -n "$hash" ] && break
        echo "(the Go proxy's $source.info names no commit)" >>"$log"
    done
    if [ -z "$hash" ]; then
        echo "$mod@$version: no such tag, and none of $* names the release commit (not served, or no Origin.Hash in its .info)" >>"$log"
        return 1
    fi
    if ! (cd "$scratch" && go list -m -f '{{.Version}}' "$mod@$hash") 2>>"$log"; then
        echo "$mod@$version: no such tag, and its release commit ${hash:0:12} (from $source) is not served: $(tail -1 "$log")" >>"$log"
        return 1
    fi
}

# copy_replaces GOMOD WRAPPER_DIR LOG: repeats GOMOD's replace directives that name a module version
# (not a directory: those only work inside the module's own repository) in the wrapper module.
copy_replaces() {
    local line list
    list=$(mktemp -p "$scratch")
    go mod edit -json "$1" | "$py" -c 'import json,sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    if new.get("Version"):
        at = "@" + old["Version"] if old.get("Version") else ""
        print(old["Path"] + at + "=" + new["Path"] + "@" + new["Version"])' >"$list"
    while read -r line; do
        go_in "$2" "$3" mod edit -replace="$line"
    done <"$list"
}

# check_pinned DIR LOG VERSION: fails unless DIR's build uses pkg/v3 and sdk/v3 at exactly VERSION.
check_pinned() {
    local mod got
    for mod in github.com/pulumi/pulumi/pkg/v3 github.com/pulumi/pulumi/sdk/v3; do
        got=$(cd "$1" && go list -m -f '{{.Version}}' "$mod" 2>>"$2")
        if [ "$got" != "$3" ]; then
            echo "$mod resolved to $got, not $3" >>"$2"
            return 1
        fi
    done
}

# wrapper DIR LOG REQUIREMENTS...: a fresh module in DIR that requires the given module@versions.
wrapper() {
    local dir=$1 log=$2 req
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    go_in "$dir" "$log" mod init cachelayer.invalid/engine-wrapper
    for req in "$@"; do
        go_in "$dir" "$log" mod edit -require="$req"
    done
}

ldflag_version="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"

build_pulumi() { # OUT WORK LOG
    local v=v$cli_version pkg=github.com/pulumi/pulumi/pkg/v3 sdk=github.com/pulumi/pulumi/sdk/v3 info
    info=$(download "$pkg@$v" "$3") || return 1
    wrapper "$2" "$3" "$pkg@$v" "$sdk@$v"
    copy_replaces "$(json_field "$info" GoMod)" "$2" "$3"
    go_in "$2" "$3" get "$pkg/cmd/pulumi@$v" "$sdk@$v"
    check_pinned "$2" "$3" "$v"
    go_in "$2" "$3" build -trimpath -tags osusergo -ldflags "-s -w $ldflag_version=$v" \
        -o "$1/pulumi" "$pkg/cmd/pulumi"
}

build_language_python() { # OUT WORK LOG
    local v=v$cli_version lang=github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
    local pkg=github.com/pulumi/pulumi/pkg/v3 sdk=github.com/pulumi/pulumi/sdk/v3 lv info sdkdir f
    lv=$(resolve "$lang" "$v" "$3" "$(release_version github.com/pulumi/pulumi "$v")" "$sdk@$v") || return 1
    info=$(download "$lang@$lv" "$3") || return 1
    wrapper "$2" "$3" "$lang@$lv" "$pkg@$v" "$sdk@$v"
    copy_replaces "$(json_field "$info" GoMod)" "$2" "$3"
    go_in "$2" "$3" get "$lang@$lv" "$pkg@$v" "$sdk@$v"
    check_pinned "$2" "$3" "$v"
    go_in "$2" "$3" build -trimpath -ldflags "-s -w $ldflag_version=$v" \
        -o "$1/pulumi-language-python" "$lang"
    # The scripts the language host runs, from the sdk/v3 module of the same release.
    sdkdir=$(cd "$2" && go list -m -f '{{.Dir}}' "$sdk")
    for f in python/cmd/pulumi-language-python-exec python/dist/pulumi-resource-pulumi-python \
        python/dist/pulumi-analyzer-policy-python; do
        if [ -f "$sdkdir/$f" ]; then
            install -m 0755 "$sdkdir/$f" "$1/"
        elif [ "${f##*/}" != pulumi-analyzer-policy-python ]; then
            echo "$sdk@$v has no $f" >>"$3"
            return 1
        fi
    done
}

# The Terraform provider module that pulumi-NAME's ../upstream submodule holds, for a build from the
# proxy (CACHELAYER_ENGINE_UPSTREAM_NAME=module@version picks another one).
upstream_module() {
    case $1 in
    docker) echo "${CACHELAYER_ENGINE_UPSTREAM_DOCKER:-github.com/kreuzwerker/terraform-provider-docker@latest}" ;;
    cloudflare) echo "${CACHELAYER_ENGINE_UPSTREAM_CLOUDFLARE:-github.com/cloudflare/terraform-provider-cloudflare@latest}" ;;
    *) return 1 ;;
    esac
}

build_provider() { # NAME OUT WORK LOG
    local name=$1 out=$2 work=$3 log=$4 version=${want[$1]} major sfx mod tagged mv info src cmd
    local old rel target file repl hash
    major=${version%%.*}
    sfx=
    if [ "$major" -ge 2 ]; then sfx=/v$major; fi
    mod=github.com/pulumi/pulumi-$name/provider$sfx
    tagged=github.com/pulumi/pulumi-$name/sdk$sfx
    mv=$(resolve "$mod" "v$version" "$log" "$(release_version "github.com/pulumi/pulumi-$name" "v$version")" \
        "$tagged@v$version") || return 1
    info=$(download "$mod@$mv" "$log") || return 1
    # A writable copy: the module is built as the main module, so its own replace directives apply.
    rm -rf "$work"
    mkdir -p "$work"
    src=$work/src
    cp -r "$(json_field "$info" Dir)" "$src"
    chmod -R u+w "$src"
    # Replaces pointing at directories that a module zip never holds: a nested module (./shim),
    # another module of the repository (../sdk), or the git submodule of the Terraform provider
    # (../upstream). Each becomes the same code fetched as a module.
    go mod edit -json "$src/go.mod" | "$py" -c 'import json,sys
for r in json.load(sys.stdin).get("Replace") or []:
    if not r["New"].get("Version"):
        print(r["Old"]["Path"], r["New"]["Path"])' >"$work/local-replaces"
    while read -r old rel; do
        [ -n "$old" ] || continue
        target=$src/$rel
        [ -e "$target/go.mod" ] && continue
        repl=
        if [ "${rel#../upstream}" != "$rel" ]; then
            repl=$(upstream_module "$name") || {
                echo "$mod replaces $old with $rel, a git submodule no Go module carries" >>"$log"
                return 1
            }
            repl=${repl%@*}@$(cd "$scratch" && go list -m -f '{{.Version}}' "$repl" 2>>"$log") || return 1
            echo "($old: $rel is Pulumi's patched git submodule; using $repl unpatched)" >>"$log"
            say "$name: ${rel} is a patched git submodule; trying the unpatched $repl"
        elif go_in "$scratch" "$log" list -m "$old@v$version"; then
            repl=$old@v$version # a module of the same repository, tagged at this release
        else
            # The directory as a module path of the same repository, at the provider's commit.
            target=$(cd "$src" && "$py" -c 'import os,sys; print(os.path.normpath(sys.argv[1]))' "provider/$rel")
            hash=$(json_field "$(json_field "$info" Info)" Origin.Hash)
            hash=${hash:-${mv##*-}}
            repl=github.com/pulumi/pulumi-$name/$target
            repl=$repl@$(cd "$scratch" && go list -m -f '{{.Version}}' "$repl@$hash" 2>>"$log") || {
                echo "$mod replaces $old with $rel, which is not in its module zip and not on the proxy as $repl@$hash" >>"$log"
                return 1
            }
        fi
        go_in "$src" "$log" mod edit -replace="$old=$repl"
    done <"$work/local-replaces"
    cmd=$src/cmd/pulumi-resource-$name
    # Bridged providers embed schema-embed.json, which is generated (and git-ignored) from the
    # committed schema.json, with the version set: what the cmd's generate.go does.
    if [ -f "$cmd/schema.json" ] && [ ! -f "$cmd/schema-embed.json" ]; then
        if [ -f "$cmd/generate.go" ]; then
            (cd "$cmd" && VERSION=$version go run -mod=mod ./generate.go) >>"$log" 2>&1
        else
            "$py" -c 'import json,sys
s = json.load(open(sys.argv[1])); s["version"] = sys.argv[2]
json.dump(s, open(sys.argv[3], "w"), separators=(",", ":"))' "$cmd/schema.json" "$version" "$cmd/schema-embed.json"
        fi
    fi
    while read -r file; do
        [ -e "$cmd/$file" ] || { echo "$cmd embeds $file, which the module does not have" >>"$log"; return 1; }
    done < <(sed -n 's|^//go:embed ||p' "$cmd"/*.go | tr ' ' '\n')
    go_in "$src" "$log" build -mod=mod -trimpath \
        -ldflags "-s -w -X $mod/pkg/version.Version=$version" \
        -o "$out/pulumi-resource-$name" "./cmd/pulumi-resource-$name"
}

declare -A status=()
failed_core=()
summary=()
build() { # NAME
    local name=$1 version label dir start reason rc is_core=0
    [[ " ${core[*]} " == *" $name "* ]] && is_core=1
    case $name in
    pulumi) version=$cli_version label=pulumi ;;
    language-python) version=$cli_version label=pulumi-language-python ;;
    *) version=${want[$name]} label=pulumi-resource-$name ;;
    esac
    if [ "$version" = - ]; then
        say "$label: skipped (the venv has no pulumi_$name)"
        ((is_core == 0)) || failed_core+=("$label")
        return 0
    fi
    dir=$cache/modules/$name-$version-r$RECIPE
    if [ -f "$dir/.built" ]; then
        say "$label $version: reused ($(cat "$dir/.built"))"
        summary+=("$label $version: reused")
        status[$name]=$dir
        return 0
    fi
    if ((is_core == 0)) && [ -f "$dir/.failed" ] && [ "${CACHELAYER_ENGINE_RETRY:-0}" != 1 ]; then
        say "FAILED $label $version (before: $(cat "$dir/.failed"); CACHELAYER_ENGINE_RETRY=1 tries again)"
        summary+=("$label $version: FAILED before")
        return 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir/bin"
    : >"$dir/build.log"
    say "$label $version: building (log: $dir/build.log)"
    start=$(date +%s)
    # A subshell outside any condition, so that set -e stops the build at its first failing step.
    set +e
    (
        set -e
        case $name in
        pulumi) build_pulumi "$dir/bin" "$dir/work" "$dir/build.log" ;;
        language-python) build_language_python "$dir/bin" "$dir/work" "$dir/build.log" ;;
        *) build_provider "$name" "$dir/bin" "$dir/work" "$dir/build.log" ;;
        esac
    )
    rc=$?
    set -e
    if ((rc == 0)); then
        echo "built in $(elapsed "$start") with $(go env GOVERSION) on $(date -u +%FT%TZ)" >"$dir/.built"
        # The wrappers and module copies are not needed once built: the Go caches keep the sources.
        rm -rf "$dir/work"
        say "$label $version: built in $(elapsed "$start")"
        summary+=("$label $version: built in $(elapsed "$start")")
        status[$name]=$dir
    else
        # The last error, with its indented continuation lines, on one line.
        reason=$(grep -v '^+ go \|^go: downloading\|^go: finding\|^go: added\|^go: upgraded\|^(' "$dir/build.log" |
            awk 'NF { if ($0 ~ /^[ \t]/) { last = last " " $0 } else { last = $0 } } END { print last }' |
            tr -s ' \t' ' ')
        echo "$reason" >"$dir/.failed"
        say "FAILED $label $version after $(elapsed "$start"): $reason (log: $dir/build.log)"
        summary+=("$label $version: FAILED")
        ((is_core == 0)) || failed_core+=("$label")
    fi
}

for name in "${core[@]}" "${optional[@]}"; do
    build "$name"
done

# The directory of this version set: hard links to the built modules' binaries, replaced whole.
bin=$cache/$key/bin
rm -rf "$bin.new"
mkdir -p "$bin.new"
for dir in "${status[@]}"; do
    for f in "$dir"/bin/*; do
        ln "$f" "$bin.new/" 2>/dev/null || cp -p "$f" "$bin.new/"
    done
done
rm -rf "$bin"
mv "$bin.new" "$bin"
printf '%s\n' "pulumi=$cli_version" "pulumi-sdk=${want[pulumi]}" "command=${want[command]}" \
    "random=${want[random]}" "tls=${want[tls]}" "docker=${want[docker]}" \
    "cloudflare=${want[cloudflare]}" "go=$(go env GOVERSION)" >"$cache/$key/versions"
say "summary: $(printf '%s; ' "${summary[@]}")"
say "binaries in $bin: $(find "$bin" -mindepth 1 -printf '%f ')"
if ((${#failed_core[@]})); then
    say "FAILED core: ${failed_core[*]} (the engine in $bin is incomplete)"
    echo "$bin"
    exit 1
fi
echo "$bin"
