"""Checks that the Docker build context holds every file the workspace build needs.

The context is what `docker build .` sends: the repository's files minus what
`.dockerignore` excludes, matched as Docker matches it (moby's patternmatcher: a
pattern is a path glob where `*` and `?` stay within one path element and `**`
spans any number of them; a pattern that matches a directory excludes everything
under it; later patterns win, `!` re-includes). The build needs the workspace's
manifests and lock file and every file under `crates/`, `tests/` and `docs/` (crates
include docs with `include_str!`), so one of those excluded fails the check, naming it.

    python3 scripts/lib/docker_context.py [REPO]     # exit 1 and a list on failure
"""
import re
import subprocess
import sys

NEEDED = re.compile(r"^(Cargo\.toml|Cargo\.lock|(crates|tests|docs)/.+)$")


def pattern_regex(pattern):
    """The regex for one cleaned .dockerignore pattern (no leading `!` or `/`)."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*" and pattern[i + 1 : i + 2] == "*":
            i += 1
            if pattern[i + 1 : i + 2] == "/":
                # `**/` matches zero or more whole directories.
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
        elif c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def parse(text):
    """(regex, excludes) per pattern of a .dockerignore, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        p = line[1:].strip() if include else line
        p = re.sub(r"/+", "/", p).strip("/")
        p = "/".join(x for x in p.split("/") if x not in ("", "."))
        if p:
            rules.append((pattern_regex(p), not include))
    return rules


def excluded(path, rules):
    """Whether `path` (relative, `/`-separated) is left out of the context."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    out = False
    for regex, excludes in rules:
        if any(regex.match(c) for c in candidates):
            out = excludes
    return out


def self_test():
    rules = parse("target/\n**/target/\n*.md\n!README.md\n**/__pycache__/\n")
    assert excluded("target/debug/x", rules)
    assert excluded("crates/load/src/target/mod.rs", rules)
    assert not excluded("crates/load/src/sink/mod.rs", rules)
    assert excluded("NOTES.md", rules) and not excluded("README.md", rules)
    assert excluded("a/b/__pycache__/c.pyc", rules)
    assert not excluded("crates/targets.rs", rules)


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "."
    self_test()
    with open(f"{repo}/.dockerignore") as f:
        rules = parse(f.read())
    files = subprocess.run(["git", "-C", repo, "ls-files"], check=True, capture_output=True, text=True).stdout.splitlines()
    needed = [f for f in files if NEEDED.match(f)]
    missing = [f for f in needed if excluded(f, rules)]
    if missing:
        print(f"{len(missing)} file(s) the build needs are excluded by .dockerignore:", file=sys.stderr)
        for f in missing:
            print(f"  {f}", file=sys.stderr)
        return 1
    sent = sum(1 for f in files if not excluded(f, rules))
    print(f"{len(needed)} build files all in the context ({sent} of {len(files)} tracked files sent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
