#!/usr/bin/env bash
# Vendor the book's two browser libraries so the built HTML loads nothing from a CDN:
#   mermaid 11.12.1 -> book/_static/mermaid/   (diagrams; sphinxcontrib-mermaid's mermaid_use_local)
#   MathJax 3.2.2   -> book/_static/mathjax/   (equations; Sphinx's mathjax_path)
# Both folders are build outputs: never commit them (they belong in .gitignore).
#
# Why mermaid's ESM build and not dist/mermaid.min.js: sphinxcontrib-mermaid 2.x loads mermaid with
# `import mermaid from "<url>"` inside a <script type="module">, so the file must be an ES module
# with a default export. dist/mermaid.min.js is an IIFE (it only sets globalThis.mermaid when run as
# a classic script) and fails when imported. The ES build is dist/mermaid.esm.min.mjs plus the
# chunks it imports from dist/chunks/mermaid.esm.min/; we copy those (without source maps).
# The mermaid version is the default of sphinxcontrib-mermaid 2.1.1 (mermaid_version = 11.12.1),
# the version that extension's JavaScript template was written against.
#
# MathJax: es5/tex-mml-chtml.js is the bundle Sphinx uses from the CDN by default; it loads its fonts
# and any TeX extension it needs on demand from paths relative to itself, so we copy those folders
# too (the unused SVG output and alternative bundles are left out).
#
# Usage: scripts/vendor_mermaid.sh [static_dir]   (default: book/_static)
# Idempotent: a library already vendored at the pinned version is left alone (delete its folder
# to force). Needs npm (Node.js >= 18) and the npm registry.
set -euo pipefail

MERMAID_VERSION="${MERMAID_VERSION:-11.12.1}"
MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATIC="${1:-$ROOT/book/_static}"

vendored() {  # vendored <dir> <version> <file that must exist>
    [[ -f "$1/VERSION" && "$(cat "$1/VERSION")" == "$2" && -f "$1/$3" ]]
}

npm_fetch() {  # npm_fetch <package> <version> <tmp> -> prints the package folder
    npm install --no-save --prefix "$3" --ignore-scripts --no-audit --no-fund --loglevel=error "$1@$2" >/dev/null
    local installed
    installed="$(node -p "require('$3/node_modules/$1/package.json').version")"
    [[ "$installed" == "$2" ]] || { echo "error: npm installed $1 $installed, expected $2" >&2; exit 1; }
    echo "$3/node_modules/$1"
}

no_cdn() {  # no_cdn <file>: the entry point must not import from a CDN
    if grep -Eq 'https?://(cdn\.jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com)' "$1"; then
        echo "error: $1 refers to a CDN" >&2
        exit 1
    fi
}

MERMAID_DEST="$STATIC/mermaid"
MATHJAX_DEST="$STATIC/mathjax"
need_mermaid=1; need_mathjax=1
vendored "$MERMAID_DEST" "$MERMAID_VERSION" mermaid.esm.min.mjs && need_mermaid=0 && echo "mermaid $MERMAID_VERSION already vendored in $MERMAID_DEST"
vendored "$MATHJAX_DEST" "$MATHJAX_VERSION" tex-mml-chtml.js && need_mathjax=0 && echo "MathJax $MATHJAX_VERSION already vendored in $MATHJAX_DEST"
(( need_mermaid || need_mathjax )) || exit 0

command -v npm >/dev/null || { echo "error: npm not found; install Node.js (>= 18) to vendor mermaid and MathJax" >&2; exit 1; }
TMP="$(mktemp -d "${TMPDIR:-/tmp}/vendor-js.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# --ignore-scripts: nothing from the registry runs on this machine; neither package needs an install step.

if (( need_mermaid )); then
    PKG="$(npm_fetch mermaid "$MERMAID_VERSION" "$TMP/mermaid")"
    DIST="$PKG/dist"
    [[ -f "$DIST/mermaid.esm.min.mjs" && -d "$DIST/chunks/mermaid.esm.min" ]] || {
        echo "error: $DIST lacks mermaid.esm.min.mjs or chunks/mermaid.esm.min/ (layout changed in mermaid $MERMAID_VERSION?)" >&2
        exit 1
    }
    rm -rf "$MERMAID_DEST"
    mkdir -p "$MERMAID_DEST/chunks/mermaid.esm.min"
    cp "$DIST/mermaid.esm.min.mjs" "$MERMAID_DEST/"
    cp "$DIST"/chunks/mermaid.esm.min/*.mjs "$MERMAID_DEST/chunks/mermaid.esm.min/"
    cp "$PKG/LICENSE" "$MERMAID_DEST/LICENSE"
    no_cdn "$MERMAID_DEST/mermaid.esm.min.mjs"
    echo "$MERMAID_VERSION" > "$MERMAID_DEST/VERSION"
    echo "vendored mermaid $MERMAID_VERSION into $MERMAID_DEST ($(du -sh "$MERMAID_DEST" | cut -f1))"
fi

if (( need_mathjax )); then
    PKG="$(npm_fetch mathjax "$MATHJAX_VERSION" "$TMP/mathjax")"
    ES5="$PKG/es5"
    [[ -f "$ES5/tex-mml-chtml.js" ]] || { echo "error: $ES5/tex-mml-chtml.js not found" >&2; exit 1; }
    rm -rf "$MATHJAX_DEST"
    mkdir -p "$MATHJAX_DEST/output"
    cp "$ES5/tex-mml-chtml.js" "$MATHJAX_DEST/"
    # on-demand parts: TeX extensions (autoload), fonts, menu/accessibility, speech rules
    cp -r "$ES5/input" "$ES5/ui" "$ES5/a11y" "$ES5/adaptors" "$ES5/sre" "$MATHJAX_DEST/"
    cp -r "$ES5/output/chtml" "$ES5/output/chtml.js" "$MATHJAX_DEST/output/"
    cp "$PKG/LICENSE" "$MATHJAX_DEST/LICENSE"
    # (no_cdn is not applied here: MathJax's bundled speech-rule engine names jsdelivr as a fallback
    # for Internet Explorer only; a modern browser loads everything from this folder.)
    echo "$MATHJAX_VERSION" > "$MATHJAX_DEST/VERSION"
    echo "vendored MathJax $MATHJAX_VERSION into $MATHJAX_DEST ($(du -sh "$MATHJAX_DEST" | cut -f1))"
fi
