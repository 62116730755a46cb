#!/usr/bin/env python3
"""Writes the schemas the test API server validates writes against (see README.md).

Usage (from the repository root; nothing here reaches the network but pip and git):

    python3 -m venv /tmp/kv && /tmp/kv/bin/pip install kubernetes-validate==1.37.0
    git -C <gateway-api clone> show \
        v1.3.0:config/crd/standard/gateway.networking.k8s.io_httproutes.yaml > /tmp/httproutes.yaml
    /tmp/kv/bin/python tests/support/kube_server/schemas/vendor.py /tmp/httproutes.yaml

It writes, next to itself:
- kubernetes-v1.35.0-strict.json: the `$defs` of kubernetes-validate's
  `v1.35.0-local-strict` schemas (every object closed with `additionalProperties: false`)
  reachable from the kinds Cairn renders, `$ref`s made local (`#/$defs/<name>`);
- gateway-api-v1.3.0-standard-httproute.json: the `v1` schema of the standard channel's
  HTTPRoute CRD, closed the same way (the API server prunes, or under strict field
  validation refuses, fields a structural schema does not declare), with `metadata` as
  Kubernetes' ObjectMeta.

Descriptions are dropped to keep the files small; everything else is kept as published
(`x-kubernetes-validations`, the CEL rules, stay as documentation: `rules.rs` implements
the ones Cairn's objects meet).
"""

import json
import os
import sys

import kubernetes_validate
import yaml

KUBERNETES = "1.35.0"
GATEWAY_API = "v1.3.0"

# The kinds Cairn's templates render (templates/kubernetes/*.j2), by group-version-kind.
KINDS = [
    ("", "v1", "Namespace"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "ResourceQuota"),
    ("", "v1", "LimitRange"),
    ("", "v1", "Secret"),
    ("", "v1", "Service"),
    ("", "v1", "PersistentVolumeClaim"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("apps", "v1", "Deployment"),
    ("batch", "v1", "Job"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
]

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
HERE = os.path.dirname(os.path.abspath(__file__))


def strip(schema, in_properties=False):
    """The schema without descriptions (a property may be *named* description)."""
    if isinstance(schema, list):
        return [strip(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description" and not in_properties:
            continue
        out[key] = strip(value, in_properties=(key == "properties" and not in_properties))
    return out


def refs(schema):
    """The `$defs` names a schema refers to."""
    found = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.split("/")[-1])
            else:
                found |= refs(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= refs(value)
    return found


def localize(schema):
    """`/api/_definitions.json#/$defs/X` becomes `#/$defs/X`."""
    if isinstance(schema, dict):
        return {
            k: ("#/$defs/" + v.split("/")[-1] if k == "$ref" and isinstance(v, str) else localize(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [localize(v) for v in schema]
    return schema


def closure(defs, roots):
    """The definitions reachable from `roots`."""
    keep, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = defs[name]
        todo.extend(refs(defs[name]) - set(keep))
    return dict(sorted(keep.items()))


def def_name(defs, group, version, kind):
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind):
                return name
    raise SystemExit(f"no schema for {group}/{version} {kind}")


def close(schema):
    """A CRD schema with every object that declares properties closed to others."""
    if isinstance(schema, list):
        return [close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: close(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = close(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [close(s) for s in value]
        else:
            out[key] = value
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    package = os.path.dirname(kubernetes_validate.__file__)
    folder = os.path.join(package, "kubernetes-json-schema", f"v{KUBERNETES}-local-strict")
    with open(os.path.join(folder, "_definitions.json")) as f:
        defs = json.load(f)["$defs"]
    kinds = {}
    for group, version, kind in KINDS:
        api_version = f"{group}/{version}" if group else version
        kinds[f"{api_version}/{kind}"] = def_name(defs, group, version, kind)
    kept = closure(defs, kinds.values())
    kubernetes = {
        "$comment": (
            f"Kubernetes v{KUBERNETES} OpenAPI schemas as JSON Schema, strict (unknown fields "
            f"refused), from the PyPI package kubernetes-validate "
            f"{kubernetes_validate.__version__} (kubernetes-json-schema/v{KUBERNETES}-local-strict), "
            "reduced to the kinds Cairn renders and without descriptions by vendor.py."
        ),
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "kubernetesVersion": KUBERNETES,
        "kinds": kinds,
        "$defs": localize(strip(kept)),
    }
    with open(os.path.join(HERE, f"kubernetes-v{KUBERNETES}-strict.json"), "w") as f:
        json.dump(kubernetes, f, indent=1, sort_keys=True)
        f.write("\n")

    with open(sys.argv[1]) as f:
        crd = yaml.safe_load(f)
    annotations = crd["metadata"]["annotations"]
    if annotations.get("gateway.networking.k8s.io/bundle-version") != GATEWAY_API:
        raise SystemExit(f"{sys.argv[1]} is not Gateway API {GATEWAY_API}")
    if annotations.get("gateway.networking.k8s.io/channel") != "standard":
        raise SystemExit(f"{sys.argv[1]} is not the standard channel")
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    route = close(strip(v1["schema"]["openAPIV3Schema"]))
    route["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
    route["properties"]["apiVersion"]["enum"] = ["gateway.networking.k8s.io/v1"]
    route["properties"]["kind"]["enum"] = ["HTTPRoute"]
    gateway = {
        "$comment": (
            f"The v1 schema of Gateway API {GATEWAY_API}'s HTTPRoute CRD (standard channel, "
            "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml), closed to unknown "
            "fields as a structural schema is, metadata as Kubernetes' ObjectMeta, without "
            "descriptions, by vendor.py."
        ),
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "gatewayApiVersion": GATEWAY_API,
        "kinds": {"gateway.networking.k8s.io/v1/HTTPRoute": "io.k8s.networking.gateway.v1.HTTPRoute"},
        "$defs": dict(
            sorted(
                {
                    "io.k8s.networking.gateway.v1.HTTPRoute": route,
                    **localize(strip(closure(defs, [OBJECT_META]))),
                }.items()
            )
        ),
    }
    with open(os.path.join(HERE, f"gateway-api-{GATEWAY_API}-standard-httproute.json"), "w") as f:
        json.dump(gateway, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
