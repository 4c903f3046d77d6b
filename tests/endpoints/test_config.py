import textwrap

import pytest

from endpoints.config import ConfigError, apply, load_file, parse_text
from endpoints.models import ServingEndpoint

GOOD = textwrap.dedent("""\
    endpoints:
      - name: chat-a
        task: llm/v1/chat
        description: first
        tags: {team: search}
        served_entities:
          - foundation_model: {name: smollm2-135m-instruct}
      - name: vllm
        task: llm/v1/chat
        served_entities:
          - name: llama
            external_model:
              name: meta-llama/Llama-3-8B
              provider: openai-compatible
              openai_config: {openai_api_base: "http://127.0.0.1:9/v1"}
    """)


def problem(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_text(text, "endpoints.yaml")
    return info.value


def test_it_parses_local_and_external_entities():
    decls = parse_text(GOOD)
    assert [d.name for d in decls] == ["chat-a", "vllm"]
    assert decls[0].served_entities[0].row() == {
        "name": "smollm2-135m-instruct", "provider": "local", "model": "smollm2-135m-instruct", "config": {}}
    assert decls[1].served_entities[0].row()["config"] == {"openai_api_base": "http://127.0.0.1:9/v1"}
    assert decls[0].tags == [{"key": "team", "value": "search"}]


def test_a_yaml_syntax_error_names_the_file_and_line():
    err = problem("endpoints:\n  - name: a\n    task: [unclosed\n")
    assert err.path == "endpoints.yaml" and err.line in (3, 4)
    assert str(err).startswith("endpoints.yaml:")


def test_a_bad_task_names_its_line():
    err = problem(GOOD.replace("task: llm/v1/chat\n    description", "task: llm/v1/chatt\n    description"))
    assert err.line == 3
    assert "llm/v1/chatt" in err.problem


def test_an_unknown_field_names_its_line():
    err = problem(GOOD.replace("description: first", "descripton: first"))
    assert err.line == 4 and "descripton" in err.problem


def test_an_entity_that_cannot_serve_the_task_names_its_line():
    text = GOOD.replace("smollm2-135m-instruct}", "all-minilm-l6-v2}")
    err = problem(text)
    assert err.line == 7
    assert "all-minilm-l6-v2" in err.problem and "llm/v1/chat" in err.problem


def test_an_unknown_local_model_is_reported():
    err = problem(GOOD.replace("smollm2-135m-instruct}", "gpt-17}"))
    assert "gpt-17" in err.problem


def test_an_invalid_endpoint_name_is_reported():
    err = problem(GOOD.replace("name: chat-a", "name: chat a!"))
    assert err.line == 2 and "not valid" in err.problem


def test_duplicate_names_are_reported():
    err = problem(GOOD.replace("name: vllm", "name: chat-a"))
    assert "declared twice" in err.problem


@pytest.mark.django_db
def test_apply_is_idempotent_and_reports_what_changed():
    first = apply(parse_text(GOOD))
    assert first.added == ["chat-a", "vllm"] and not first.changed
    again = apply(parse_text(GOOD))
    assert again.unchanged == ["chat-a", "vllm"] and not again.added and not again.changed and not again.removed
    edited = GOOD.replace("description: first", "description: second").split("  - name: vllm")[0]
    third = apply(parse_text(edited))
    assert third.changed == ["chat-a"] and third.removed == ["vllm"]
    assert ServingEndpoint.objects.get(name="chat-a").description == "second"
    assert not ServingEndpoint.objects.filter(name="vllm").exists()


@pytest.mark.django_db
def test_apply_leaves_endpoints_of_other_sources_alone():
    ServingEndpoint.objects.create(name="from-api", task="llm/v1/chat", source="api")
    changes = apply(parse_text(GOOD))
    assert "from-api" not in changes.removed
    assert ServingEndpoint.objects.filter(name="from-api").exists()


@pytest.mark.django_db
def test_the_shipped_file_declares_the_three_embedded_endpoints(settings):
    decls = load_file(settings.ENDPOINTS_FILE)
    assert {(d.name, d.task) for d in decls} == {
        ("local-smollm2-chat", "llm/v1/chat"),
        ("local-smollm2-completions", "llm/v1/completions"),
        ("local-minilm-embeddings", "llm/v1/embeddings"),
    }
