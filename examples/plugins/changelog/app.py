"""changelog: fails when a release has no entry in the changelog.

Reads the release tags from git history (through the `process` capability: the step is
granted `git` and nothing else), finds the versions the changelog's headings mention, and
fails for every release without one. With `require-unreleased`, commits made after the
latest release must be described under an `Unreleased` heading too.
"""

import re

import ferry_sdk as ferry

VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def version_of(tag: str) -> str:
    """`v1.2.0` and `release-1.2.0` name version `1.2.0`."""
    match = VERSION.search(tag)
    return match.group(0) if match else tag


def headings(text: str):
    """(line number, heading text) for every Markdown heading outside code fences."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            yield number, match.group(2)


class Changelog(ferry.Step):
    """Fails when a release tag in git history has no entry in the changelog."""

    name = "changelog"
    version = "0.1.0"
    inputs = [
        ferry.Input("file", "The changelog, relative to the workspace.", default="CHANGELOG.md"),
        ferry.Input("tag-pattern", "Which tags are releases, as a git pattern.", default="v*"),
        ferry.Input(
            "require-unreleased",
            "Also fail when commits after the latest release are not under an `Unreleased` heading.",
            type=bool,
            default=False,
        ),
    ]
    outputs = [
        ferry.Output("releases", "How many release tags were checked."),
        ferry.Output("latest", "The latest release's version, empty when there is none."),
        ferry.Output("missing", "Versions without an entry, comma-separated."),
    ]
    capabilities = ferry.Capabilities(workspace="read", exec=["git"])

    def run(self, inputs):
        git = lambda *args: ferry.exec("git", *args, echo=False).stdout_text  # noqa: E731
        inside = ferry.exec("git", "rev-parse", "--is-inside-work-tree", echo=False, check=False)
        if not inside.ok:
            raise ferry.Failed(
                "the workspace is not a git repository, so there are no releases to check"
            )
        releases = [
            line.split(" ", 1)
            for line in git(
                "for-each-ref",
                "--sort=-v:refname",
                "--format=%(refname:short) %(creatordate:short)",
                f"refs/tags/{inputs.tag_pattern}",
            ).splitlines()
            if line.strip()
        ]
        try:
            with open(inputs.file, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ferry.Failed(
                f"{inputs.file} not found; create it, or set `file:` to the changelog's path"
            ) from None

        found = {}
        unreleased = None
        for line, heading in headings(text):
            if "unreleased" in heading.lower():
                unreleased = line
            for version in VERSION.findall(heading):
                found.setdefault(version, line)

        missing = []
        with ferry.log.group(f"{len(releases)} releases matching `{inputs.tag_pattern}`"):
            for tag, date in releases:
                version = version_of(tag)
                if version in found:
                    ferry.log.info(f"{tag} ({date}): {inputs.file}:{found[version]}")
                else:
                    missing.append(version)
                    ferry.log.annotate(
                        "error",
                        f"release {tag} ({date}) has no entry",
                        file=inputs.file,
                        line=1,
                        rule="changelog/missing-release",
                    )

        problems = []
        if missing:
            problems.append(
                f"{len(missing)} of {len(releases)} releases have no entry in {inputs.file}: "
                + ", ".join(missing)
            )
        if inputs.require_unreleased:
            since = releases[0][0] if releases else None
            count = int(git("rev-list", "--count", f"{since}..HEAD" if since else "HEAD").strip())
            if count and unreleased is None:
                where = f"made since {since}" if since else "no release yet"
                commits = "1 commit is" if count == 1 else f"{count} commits are"
                problems.append(f"{commits} not described under an `Unreleased` heading ({where})")

        ferry.set_output("releases", len(releases))
        ferry.set_output("latest", version_of(releases[0][0]) if releases else "")
        ferry.set_output("missing", ",".join(missing))
        if problems:
            raise ferry.Failed("; ".join(problems))
        if releases:
            ferry.log.info(f"all {len(releases)} releases have an entry in {inputs.file}")
        else:
            ferry.log.info(f"no tag matches `{inputs.tag_pattern}`: nothing released yet")


WitWorld = ferry.export(Changelog)
