"""Generate the reference sections of docs/api.md from the proto, so the doc cannot drift.

Run from the repository root:
    python proto/docs.py            rewrite the generated sections of docs/api.md in place
    python proto/docs.py --check    exit 1 when docs/api.md is stale (tests/proto/test_api_docs.py)

Every RPC, message, field and enum value is read from the descriptor protoc builds with source
info, and described by its comment in the .proto. The hand-written prose around the generated
sections is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILE = "explainserve/v1/explainer.proto"
REPO_ROOT = PROTO_ROOT.parent
API_DOC = REPO_ROOT / "docs" / "api.md"
SERVICE_CONFIG = REPO_ROOT / "docs" / "service_config.json"
_SECTION = re.compile(
    r"(<!-- BEGIN GENERATED (?P<name>[\w-]+) by proto/docs.py; do not edit -->\n)"
    r".*?"
    r"(<!-- END GENERATED (?P=name) -->)", re.DOTALL)

# Paths into FileDescriptorProto, as SourceCodeInfo.Location.path counts them.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _ENUM_VALUE, _METHOD = 2, 3, 2, 2

_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}
_WELL_KNOWN = "https://protobuf.dev/reference/protobuf/google.protobuf/#"


def load_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Compile the proto with its comments (source info) and return its file descriptor."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "explainer.binpb"
        include = str(Path(protoc.__file__).parent / "_proto")
        code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                            "--include_source_info", f"--descriptor_set_out={out}", PROTO_FILE])
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {PROTO_FILE}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    (descriptor,) = [f for f in files if f.name == PROTO_FILE]
    return descriptor


class _Comments:
    """Leading comments and first lines by descriptor path."""

    def __init__(self, descriptor: descriptor_pb2.FileDescriptorProto) -> None:
        self._text = {}
        self.line = {}
        for location in descriptor.source_code_info.location:
            path = tuple(location.path)
            self._text[path] = " ".join(location.leading_comments.split())
            self.line[path] = location.span[0]

    def __call__(self, *path: int) -> str:
        return self._text.get(path, "").replace("|", "\\|")


def _type_link(type_name: str, package: str) -> str:
    name = type_name.lstrip(".")
    if name.startswith(f"{package}."):
        short = name.removeprefix(f"{package}.")
        return f"[{short}](#{short.lower()})"
    return f"[{name}]({_WELL_KNOWN}{name.rsplit('.', 1)[-1].lower()})"


def _field_type(field: descriptor_pb2.FieldDescriptorProto, package: str,
                map_entries: dict | None = None) -> str:
    entry = (map_entries or {}).get(field.type_name.rsplit(".", 1)[-1])
    if entry is not None:  # map<K, V>: protoc's nested entry type with fields key and value
        key, value = entry.field
        return f"map<{_field_type(key, package)}, {_field_type(value, package)}>"
    if field.type_name:
        base = _type_link(field.type_name, package)
    else:
        base = f"`{_SCALARS[field.type]}`"
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {base}"
    if field.proto3_optional:
        return f"optional {base}"
    return base


def _message_section(message, index: int, package: str, comment: _Comments) -> list[str]:
    lines = [f"### {message.name}", "", comment(_MESSAGE, index) or "(no comment)", ""]
    if not message.field:
        return lines + ["No fields.", ""]
    lines += ["| Field | Number | Type | Description |", "|---|---|---|---|"]
    for number, field in enumerate(message.field):
        description = comment(_MESSAGE, index, _FIELD, number)
        real_oneof = field.HasField("oneof_index") and not field.proto3_optional
        if real_oneof:
            description = f"One of `{message.oneof_decl[field.oneof_index].name}`. {description}"
        entries = {nested.name: nested for nested in message.nested_type
                   if nested.options.map_entry}
        lines.append(f"| `{field.name}` | {field.number} | {_field_type(field, package, entries)} | "
                     f"{description} |")
    return lines + [""]


def _enum_section(enum, index: int, comment: _Comments) -> list[str]:
    lines = [f"### {enum.name}", "", f"Enum. {comment(_ENUM, index)}", "",
             "| Value | Number | Description |", "|---|---|---|"]
    for number, value in enumerate(enum.value):
        lines.append(f"| `{value.name}` | {value.number} | "
                     f"{comment(_ENUM, index, _ENUM_VALUE, number)} |")
    return lines + [""]


def _service_section(service, index: int, package: str, comment: _Comments) -> list[str]:
    lines = [f"### {package}.{service.name}", "", comment(_SERVICE, index), "",
             "| RPC | Request | Response | Description |", "|---|---|---|---|"]
    for number, method in enumerate(service.method):
        request = ("stream " if method.client_streaming else "") + _type_link(method.input_type, package)
        response = ("stream " if method.server_streaming else "") + _type_link(method.output_type, package)
        lines.append(f"| `{method.name}` | {request} | {response} | "
                     f"{comment(_SERVICE, index, _METHOD, number)} |")
    return lines + [""]


def render_reference(descriptor: descriptor_pb2.FileDescriptorProto) -> str:
    """The service, then every message and enum in the order the .proto defines them."""
    package = descriptor.package
    comment = _Comments(descriptor)
    for message in descriptor.message_type:
        # A map field's entry type is the one nested type protoc makes itself; see _field_type.
        if message.enum_type or any(not nested.options.map_entry for nested in message.nested_type):
            raise ValueError(f"message {message.name} has nested types; teach proto/docs.py them")
    lines = [f"Package `{package}`, file `proto/{descriptor.name}`.", ""]
    for index, service in enumerate(descriptor.service):
        lines += _service_section(service, index, package, comment)
    sections = [(comment.line[(_MESSAGE, i)], _message_section(m, i, package, comment))
                for i, m in enumerate(descriptor.message_type)]
    sections += [(comment.line[(_ENUM, i)], _enum_section(e, i, comment))
                 for i, e in enumerate(descriptor.enum_type)]
    for _, section in sorted(sections, key=lambda pair: pair[0]):
        lines += section
    return "\n".join(lines)


def render_service_config() -> str:
    """The client service config that tests/node/explain_client.mjs really uses."""
    config = json.loads(SERVICE_CONFIG.read_text())
    return "```json\n" + json.dumps(config, indent=2) + "\n```"


def update(text: str, sections: dict[str, str]) -> str:
    """text with each generated section replaced; every section must have its markers."""
    found = {match.group("name") for match in _SECTION.finditer(text)}
    missing = sorted(set(sections) - found)
    if missing:
        raise ValueError(f"{API_DOC} lacks the markers of generated sections {missing}")
    return _SECTION.sub(lambda m: f"{m.group(1)}{sections[m.group('name')]}\n{m.group(3)}", text)


def generated_sections() -> dict[str, str]:
    return {"reference": render_reference(load_descriptor()),
            "service-config": render_service_config()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    args = parser.parse_args(argv)
    current = API_DOC.read_text()
    wanted = update(current, generated_sections())
    if args.check:
        if wanted != current:
            sys.stderr.write(f"{API_DOC} is stale: run python proto/docs.py\n")
            return 1
        return 0
    API_DOC.write_text(wanted)
    sys.stdout.write(f"wrote {API_DOC}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
