"""Reading jvm/pom.xml: the versions the project pins for its JVM components."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from aqi.core.environments import JVM_PROJECT_DIR

__all__ = ["module_dependencies", "pom_properties"]

_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_properties() -> dict[str, str]:
    """The <properties> of jvm/pom.xml (kafka.version, spark.version, ...)."""
    root = ET.parse(JVM_PROJECT_DIR / "pom.xml").getroot()
    props = root.find("m:properties", _NS)
    return {child.tag.split("}", 1)[1]: (child.text or "").strip() for child in props}


def module_dependencies(module: str) -> list[tuple[str, str, str]]:
    """(groupId, artifactId, version with properties resolved) of a module's dependencies."""
    root = ET.parse(Path(JVM_PROJECT_DIR, module, "pom.xml")).getroot()
    props = pom_properties()
    found = []
    for dep in root.findall("m:dependencies/m:dependency", _NS):
        version = dep.findtext("m:version", default="", namespaces=_NS)
        for name, value in props.items():
            version = version.replace("${" + name + "}", value)
        found.append((dep.findtext("m:groupId", namespaces=_NS),
                      dep.findtext("m:artifactId", namespaces=_NS), version))  # fmt: skip
    return found
