"""Schema-checks rendered Kubernetes manifests, offline.

Usage: python validate.py K8S_VERSION FILE...   (each FILE one `kubectl kustomize` output)

Built-in kinds are checked with kubernetes-validate (the OpenAPI schemas of the given
Kubernetes release, shipped in the PyPI package) in strict mode: unknown fields are
errors. Custom resources are checked with the JSON schemas beside this file, named
GROUP_VERSION_KIND.json. A kind with no schema either way is an error, so a new CRD
cannot slip through unchecked. Exit 1 on any problem.
"""

import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent


def crd_schema(api_version: str, kind: str):
    path = HERE / f"{api_version.replace('/', '_')}_{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> int:
    version, files = sys.argv[1], sys.argv[2:]
    problems, checked = [], 0
    for f in files:
        for doc in yaml.safe_load_all(pathlib.Path(f).read_text()):
            if not doc:
                continue
            api, kind = doc.get("apiVersion", "?"), doc.get("kind", "?")
            name = f"{f}: {kind}/{doc.get('metadata', {}).get('name', '?')}"
            schema = crd_schema(api, kind)
            try:
                if schema is not None:
                    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
                else:
                    kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: no schema for {api} {kind} (add infra/k8s/schemas/{api.replace('/', '_')}_{kind}.json)")
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
                err = getattr(e, "caused_by", e)
                where = "/".join(str(p) for p in getattr(err, "path", []))
                problems.append(f"{name}: {where}: {getattr(err, 'message', err)}")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print(f"k8s {version}: {checked} resource(s) valid, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
