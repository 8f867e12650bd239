#!/usr/bin/python3
"""Validate routewatch outputs with real, independent parsers.

  check_outputs.py schema SCHEMA.json PROBES.yaml   # the probe file against the printed JSON Schema
  check_outputs.py prometheus FILE                  # text exposition, prometheus_client's parser
  check_outputs.py junit FILE                       # JUnit XML structure CI systems rely on
"""
import json
import sys
import xml.etree.ElementTree as ET


def yaml12_loader():
    """PyYAML speaks YAML 1.1, where `on:` is the boolean true; routewatch's loader (YAML
    1.2 core schema) reads it as the string "on". Resolve booleans the 1.2 way."""
    import re
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return Loader


def schema(schema_path, probes_path):
    import jsonschema
    import yaml
    with open(schema_path) as f:
        s = json.load(f)
    with open(probes_path) as f:
        doc = yaml.load(f, Loader=yaml12_loader())
    jsonschema.validate(doc, s)
    # As a YAML 1.1 tool reads it (PyYAML's safe_load: a bare `on:` is the boolean true): the
    # shipped example quotes "on" so that every tool sees the same file.
    with open(probes_path) as f:
        doc11 = yaml.safe_load(f)
    try:
        jsonschema.validate(doc11, s)
    except jsonschema.ValidationError as e:
        sys.exit(f"{probes_path} fails its schema as YAML 1.1 tools read it (quote \"on\":): {e.message}")
    # The schema must reject what the loader rejects.
    bad = dict(doc)
    bad["defaults"] = dict(doc.get("defaults", {}), timout="3s")
    try:
        jsonschema.validate(bad, s)
    except jsonschema.ValidationError:
        pass
    else:
        sys.exit("schema accepted an unknown key")
    print("schema ok")


def prometheus(path):
    from prometheus_client.parser import text_string_to_metric_families
    with open(path) as f:
        text = f.read()
    names = {fam.name: fam for fam in text_string_to_metric_families(text)}
    for want in ["routewatch_route_up", "routewatch_route_duration_seconds", "routewatch_route_attempts",
                 "routewatch_target_healthy", "routewatch_recoveries", "routewatch_last_run_timestamp_seconds"]:
        if want not in names:
            sys.exit(f"missing metric family {want}; have {sorted(names)}")
    up = names["routewatch_route_up"]
    for s in up.samples:
        if set(s.labels) != {"target", "route", "class"}:
            sys.exit(f"bad labels {s.labels}")
    print(json.dumps({n: [[s.labels, s.value] for s in f.samples] for n, f in names.items()}))


def junit(path):
    root = ET.parse(path).getroot()
    if root.tag != "testsuites":
        sys.exit(f"root is {root.tag}")
    out = []
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        if int(suite.get("tests")) != len(cases):
            sys.exit("tests count mismatch")
        fails = [c for c in cases if c.find("failure") is not None]
        if int(suite.get("failures")) != len(fails):
            sys.exit("failures count mismatch")
        for c in cases:
            for attr in ("name", "classname", "time"):
                if c.get(attr) is None:
                    sys.exit(f"testcase without {attr}")
            float(c.get("time"))
            f = c.find("failure")
            out.append({"suite": suite.get("name"), "name": c.get("name"),
                        "failure": None if f is None else f.get("type"),
                        "note": (c.findtext("system-out") or None)})
    print(json.dumps(out))


if __name__ == "__main__":
    {"schema": schema, "prometheus": prometheus, "junit": junit}[sys.argv[1]](*sys.argv[2:])
