#!/usr/bin/env python3
"""Offline Kubernetes tooling for tests/tests/manifests.rs.

Runs in the virtualenv scripts/setup.sh makes (kubernetes-validate, which
bundles the Kubernetes OpenAPI schemas, and helm-python-sdk, which binds
Helm's own Go engine); neither touches the network.

  k8s_check.py validate VERSION FILE...      strict schema validation of every document
  k8s_check.py load FILE...                  the documents as one JSON list
  k8s_check.py render CHART NS [VALUES_JSON] the chart rendered offline, as one JSON list
  k8s_check.py lint CHART                    helm lint; errors on stderr

Exit 0 on success, 1 with the reasons on stderr otherwise.
"""

import json
import sys

import yaml


class StrictLoader(yaml.SafeLoader):
    """Refuses a key twice in one mapping, as kubectl does (PyYAML keeps the last)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def documents(text, origin):
    out = []
    try:
        docs = list(yaml.load_all(text, Loader=StrictLoader))
    except yaml.YAMLError as e:
        raise SystemExit(f"{origin}: {e}")
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SystemExit(f"{origin}: a document is not a mapping")
        out.append(doc)
    return out


def load(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs.extend(documents(f.read(), path))
    return docs


def validate(version, paths):
    import kubernetes_validate

    failures = []
    for path in paths:
        for doc in load([path]):
            what = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{what}: {'.'.join(str(p) for p in e.path)}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures.append(
                    f"{what}: no schema for it in Kubernetes {version}: {e} (a custom resource "
                    "such as a PrometheusRule belongs in a subdirectory, e.g. manifests/monitoring/: "
                    "`kubectl apply -f manifests/` must work on a cluster without its CRD)"
                )
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    return 0


def render(chart, namespace, values_json):
    import helm_python

    values = json.loads(values_json) if values_json else None
    with helm_python.Chart.load(chart) as c:
        try:
            rendered = c.render(values=values, name="vpc-cni", namespace=namespace, is_install=True)
        except helm_python.HelmError as e:
            print(f"render failed: {e}", file=sys.stderr)
            return 1
    docs = []
    for name in sorted(rendered):
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(documents(rendered[name], name))
    json.dump(docs, sys.stdout)
    return 0


def lint(chart):
    import helm_python

    result = helm_python.lint(chart)
    # Severity 1 is INFO (e.g. "icon is recommended"); 2 WARNING, 3+ ERROR.
    bad = [m for m in result.get("messages", []) if m.get("severity", 0) >= 2]
    bad += result.get("errors", [])
    if bad:
        print(json.dumps(bad, indent=1), file=sys.stderr)
        return 1
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "validate" and len(args) >= 2:
        return validate(args[0], args[1:])
    if cmd == "load":
        json.dump(load(args), sys.stdout)
        return 0
    if cmd == "render" and len(args) in (2, 3):
        return render(args[0], args[1], args[2] if len(args) == 3 else None)
    if cmd == "lint" and len(args) == 1:
        return lint(args[0])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
