"""The declared row contract (`emoray.contract`): the pipeline's stage list is checked before
Ray starts, the stored read takes the columns the stages declare, and docs/annotate.md's stage
table is the one the declarations render. Milliseconds, no Ray."""

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest

from emoray import columns, contract, stages
from emoray.config import AnnotateConfig
from emoray.contract import INPUT, ContractError, Stage
from emoray.engines.stage import ENGINE
from emoray.pipeline import STAGES, Annotator
from emoray.lake.table import SCHEMA

STAGE_DOC = Path(__file__).resolve().parents[1] / "docs" / "annotate.md"


def test_the_pipeline_list_meets_every_need():
    contract.check(STAGES, SCHEMA.names)
    assert [s.name for s in STAGES] == [
        "Normalize", "ReadStored", "ExpandRequests", "SkipHeld", "AttachReuse", "GroupByText",
        "Engine", "Parse"]


def test_a_stage_before_what_it_needs_is_refused_naming_it():
    moved = (STAGES[0], STAGES[1], STAGES[3], STAGES[2], *STAGES[4:])
    with pytest.raises(ContractError, match=r"stage SkipHeld needs columns \['task', 'target', "
                       r"'prompt_version'\] that no stage before it gives \(they give: doc_id, "
                       r"request, side, text, text_sha256, text_status\)"):
        contract.check(moved, SCHEMA.names)


def test_a_stage_out_of_the_flow_is_refused():
    late = dataclasses.replace(stages.PARSE, name="Early parse")
    with pytest.raises(ContractError, match=r"stage ExpandRequests runs on text partition and "
                       r"cannot come after stage Early parse, which runs on row batches"):
        contract.check((STAGES[0], STAGES[1], late, *STAGES[2:]), SCHEMA.names)


def test_an_engine_stage_missing_a_declared_output_is_refused_before_ray():
    broken = dataclasses.replace(ENGINE, name="Engine (broken)", adds=ENGINE.adds[1:])
    with pytest.raises(ContractError, match=r"stage Parse needs columns \['raw_output'\]"):
        Annotator(AnnotateConfig(), engine=broken)


def test_a_stored_column_the_table_lacks_is_refused():
    reads = dataclasses.replace(stages.SKIP_HELD, stored=("doc_id", "sentiment"))
    with pytest.raises(ContractError, match=r"stage SkipHeld reads stored columns "
                       r"\['sentiment'\] that the annotation table does not have"):
        contract.check((*STAGES[:3], reads, *STAGES[4:]), SCHEMA.names)


def test_a_column_the_registry_lacks_is_refused():
    """Every column a stage needs or adds has one home, with its type and meaning."""
    adds = dataclasses.replace(stages.GROUP_BY_TEXT, adds=("doc_ids", "doc_count"))
    with pytest.raises(ContractError, match=r"stage GroupByText names columns \['doc_count'\] "
                       "that emoray.columns does not register"):
        contract.check((*STAGES[:5], adds, *STAGES[6:]), SCHEMA.names)
    assert SCHEMA == pa.schema([pa.field(n, c.type, nullable=c.nullable)
                                for n, c in columns.TABLE.items()])
    named = {c for s in STAGES for c in (*s.needs, *s.adds)}
    assert sorted(set(columns.COLUMNS) - named) == []  # and none registered that no stage names


def test_the_stored_read_takes_the_declared_columns():
    assert contract.stored_columns(STAGES) == [
        "model", "doc_id", "text_sha256", "task", "target", "prompt_version", "status",
        "raw_output", "raw_confidence", "confidence", "score", "annotated_at", "run_id"]
    assert stages.PLAN_INPUT.names == [
        "side", "doc_id", "text_sha256", "text", "text_status", "request", "task", "target",
        "prompt_version", "status", "raw_output", "raw_confidence", "confidence", "score",
        "annotated_at", "run_id"]


def test_a_stage_that_breaks_its_promise_fails_naming_it():
    liar = Stage("Liar", contract.BATCHES, lambda batch: batch, needs=("a",), adds=("b",))
    with pytest.raises(ContractError, match=r"stage Liar promised columns \['b'\]; its output "
                       r"has \['a'\]"):
        liar(pa.table({"a": [1]}))
    with pytest.raises(ContractError, match=r"stage Liar needs columns \['a'\]; got \['x'\]"):
        liar.task()(pa.table({"x": [1]}))
    assert liar.task().__name__ == "Liar"  # Ray Data names the operator MapBatches(Liar)


def test_the_stage_table_in_the_docs_is_generated_from_the_declarations():
    """`emoray stages` prints it; paste its output into docs/annotate.md when a stage changes."""
    assert contract.render(STAGES) in STAGE_DOC.read_text()


def test_a_stage_parameter_the_run_does_not_provide_is_refused_before_ray():
    """Stage functions take the run's values by parameter name: a renamed parameter (`wave`
    spelt `waves`) would silently run on its default, so it is an error naming it."""
    import pyarrow as pa

    def normalize(batch: pa.Table, id_column: str = "id", waves=(0, 1)) -> pa.Table:
        return batch

    renamed = Stage("Normalize", INPUT, normalize, adds=("doc_id",))
    context = ("id_column", "text_column", "wave")
    contract.check_bindings((renamed,), ("id_column", "waves"))  # provided: fine
    with pytest.raises(ContractError, match=r"stage Normalize's function normalize takes "
                       r"\['waves'\], which the run context does not provide \(it provides: "
                       r"id_column, text_column, wave\)"):
        contract.check_bindings((renamed,), context)
