"""scripts/speed_table.py: two campaign folders' runs side by side, run for run (issue 38's measurement)."""

import importlib.util
import json
from pathlib import Path

from helpers import make_record

PATH = Path(__file__).resolve().parent.parent / "scripts" / "speed_table.py"
spec = importlib.util.spec_from_file_location("speed_table", PATH)
st = importlib.util.module_from_spec(spec)
spec.loader.exec_module(st)


def write(root, folder, rec):
    path = root / folder / f"{rec['variant']}_seed{rec['seed']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def test_runs_in_both_folders_side_by_side_with_their_parts_and_accuracy(tmp_path, capsys):
    parts = {"start": 9.0, "data": 1.0, "model": 1.0, "compile": 8.0, "steps": 6.0, "evaluation": 3.0, "other": 1.0}
    base = make_record("sdpa", 0, 0.85, end_to_end_s=29.0, time_parts_s=parts, train_time_excl_compile_s=6.0)
    new = make_record("sdpa", 0, 0.86, end_to_end_s=12.0, time_parts_s=parts, train_time_excl_compile_s=6.0)
    write(tmp_path / "base", "records", base)
    write(tmp_path / "new", "records", new)
    write(tmp_path / "new", "records", make_record("linear", 0, 0.8))  # in one folder only: left out
    write(tmp_path / "new", "records", make_record("flash", 1, 0.8, status="failed"))
    assert st.main([str(tmp_path / "base"), str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "records sdpa seed 0" in out and "ACCURACY DIFFERS" in out and "linear" not in out
    assert " 4.83 " in out and " 2.00 " in out  # end to end over training without compile: 29 / 6, 12 / 6


def test_no_common_run_is_said_in_one_line(tmp_path, capsys):
    write(tmp_path / "base", "records", make_record("sdpa", 0, 0.85))
    assert st.main([str(tmp_path / "base"), str(tmp_path / "new")]) == 1
    assert "no run is in both folders (1 in" in capsys.readouterr().err
    assert st.main(["a", "b", "c"]) == 2


def test_one_folder_is_listed_run_by_run(tmp_path, capsys):
    parts = {"start": 0.3, "compile": 1.0, "steps": 6.0, "evaluation": 2.0}
    rec = make_record("sdpa", 1, 0.85, end_to_end_s=12.0, time_parts_s=parts, train_time_excl_compile_s=6.0)
    write(tmp_path / "new", "records", rec | {"runs_before_in_process": 1})
    assert st.main([str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "records sdpa seed 1" in out and "run 2 of its kernel" in out and " 2.00 " in out
    assert st.main([str(tmp_path / "none")]) == 1 and "no ok record under" in capsys.readouterr().err
