"""read_node_tokens: the GM's --node-token-file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedna_gm.node_tokens import NodeTokenFileError, read_node_tokens


def test_yaml_and_json_mappings(tmp_path: Path) -> None:
    yaml_file = tmp_path / "tokens.yaml"
    yaml_file.write_text("edge-1: abc123\nedge-2: '  def456  '\n")
    assert read_node_tokens(yaml_file) == {"edge-1": "abc123", "edge-2": "def456"}
    json_file = tmp_path / "tokens.json"
    json_file.write_text('{"edge-1": "abc123"}')
    assert read_node_tokens(json_file) == {"edge-1": "abc123"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- edge-1\n", "expected a mapping of node name to token, got list"),
        ("edge-1: ''\n", "node 'edge-1' needs a non-empty string token"),
        ("edge-1: 12\n", "node 'edge-1' needs a non-empty string token"),
        ("edge-1: [unclosed\n", "not valid YAML/JSON"),
    ],
)
def test_malformed_files_name_the_entry_never_the_token(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(content)
    with pytest.raises(NodeTokenFileError, match=message) as caught:
        read_node_tokens(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NodeTokenFileError, match="No such file"):
        read_node_tokens(tmp_path / "absent.yaml")
