"""`shop-features online --pairs`: a bad pairs file is refused naming the file, before Feast (or
the online store) is touched."""

import pytest

from features import cli as features_cli


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "No such file"),
        ("[[", "Expecting value"),
        ('[["u1"]]', "expected a JSON list of [user_id, product_id] strings"),
        ('{"u1": "p1"}', "expected a JSON list of [user_id, product_id] strings"),
        ('[["u1", 3]]', "expected a JSON list of [user_id, product_id] strings"),
    ],
)
def test_a_bad_pairs_file_is_a_usage_error_naming_the_file(tmp_path, capsys, content, says):
    path = tmp_path / "pairs.json"
    if content is not None:
        path.write_text(content)
    argv = ["online", "--pairs", str(path), "--set", f"data.root={tmp_path}"]
    assert features_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--pairs {path}" in err and says in err, err


def test_online_needs_a_user_and_a_product_or_pairs(tmp_path, capsys):
    assert features_cli.main(["online", "--user", "u1", "--set", f"data.root={tmp_path}"]) == 2
    assert "give --user and --product, or --pairs" in capsys.readouterr().err
