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
        "name": "smollm2-135m-instruct", "provider": "local", "model": "smollm2-135m-instruct", "config": {},
        "vision": None}
    assert decls[1].served_entities[0].row()["config"] == {"openai_api_base": "http://127.0.0.1:9/v1"}
    assert decls[0].tags == [{"key": "team", "value": "search"}]


@pytest.mark.django_db
def test_vision_is_a_served_entity_setting_applied_and_changed_like_the_rest():
    from endpoints import registry
    from endpoints.providers import get_provider

    apply(parse_text(GOOD))
    registry.invalidate()
    # Unset: as the provider knows. An openai-compatible server's model is unknown: no images.
    assert not get_provider(registry.snapshot()["vllm"].entities[0]).sees_images
    changes = apply(parse_text(GOOD.replace("      - name: llama\n", "      - name: llama\n        vision: true\n")))
    assert changes.changed == ["vllm"]
    registry.invalidate()
    assert get_provider(registry.snapshot()["vllm"].entities[0]).sees_images


def test_a_vision_that_is_not_true_or_false_names_its_line():
    err = problem(GOOD.replace("      - name: llama\n", "      - name: llama\n        vision: sometimes\n"))
    assert err.line == 12 and "vision" in err.problem and "boolean" in err.problem


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


# --- the file's JSON is bounded as the management API, the admin and the pages bound it ----------

EXAMPLES = textwrap.dedent("""\
    endpoints:
      - name: chat-x
        task: llm/v1/chat
        served_entities:
          - foundation_model: {name: smollm2-135m-instruct}
        examples:
          - name: First
            body: {messages: [{role: user, content: "Hi"}]}
          - name: Second
            body: {messages: [{role: user, content: "%s"}]}
          - name: Third
            body: {messages: [{role: user, content: "Bye"}]}
    """)


def external(config: str, tags: str = "{}") -> str:
    """A file with one external entity whose openai_config is ``config`` (flow YAML)."""
    return textwrap.dedent("""\
        endpoints:
          - name: vendor
            task: llm/v1/chat
            tags: %s
            served_entities:
              - name: gpt
                external_model:
                  name: gpt-4o
                  provider: openai-compatible
                  openai_config: %s
        """) % (tags, config)


def chain(depth: int) -> str:
    """A flow list whose last item is ``depth`` mappings deep, each aliasing the one before: the
    text nests three levels, the value ``depth``."""
    items = ["&a0 {n: 1}"] + [f"&a{i} {{n: *a{i - 1}}}" for i in range(1, depth)]
    return "[" + ", ".join(items) + "]"


def test_an_example_over_the_size_limit_names_the_endpoint_the_example_and_the_limit(settings):
    settings.EXAMPLE_MAX_BYTES = 1024
    err = problem(EXAMPLES % ("x" * 2000))
    assert err.line == 10
    assert err.problem == ("endpoint 'chat-x', example 'Second': its body is 2.0 KiB of JSON; an example may be "
                           "at most 1.0 KiB (FONDASI_EXAMPLE_MAX_BYTES)")
    # Measured as the pages measure it (compact JSON): 1,024 bytes is within the limit.
    fits = 1024 - len('{"messages":[{"role":"user","content":""}]}')
    assert len(parse_text(EXAMPLES % ("x" * fits))[0].examples) == 3


def test_more_examples_than_the_limit_names_the_endpoint_the_first_example_over_and_the_limit(settings):
    settings.EXAMPLES_PER_ENDPOINT = 2
    err = problem(EXAMPLES % "Hello")
    assert err.line == 11
    assert err.problem == ("endpoint 'chat-x', example 'Third': an endpoint keeps at most 2 examples "
                           "(FONDASI_EXAMPLES_PER_ENDPOINT); the file declares 3")


def test_an_example_nested_past_the_depth_limit_is_refused_naming_it():
    err = problem(EXAMPLES.replace('content: "%s"', f"content: {chain(40)}"))
    assert err.line == 10
    assert err.problem.startswith("endpoint 'chat-x', example 'Second': Invalid 'examples.1.body': it is nested "
                                  "more than 32 levels deep")


def test_a_config_past_the_depth_limit_is_refused_naming_the_field():
    err = problem(external(f'{{openai_api_base: "http://127.0.0.1:9/v1", chain: {chain(20)}}}'))
    assert err.line == 10
    assert err.problem == ("endpoint 'vendor': Invalid 'served_entities.0.external_model.openai_config': it is nested "
                           "more than 16 levels deep; at most 16 levels are allowed.")


def test_a_config_or_tags_past_the_size_limit_are_refused_naming_the_field():
    big = "x" * (70 * 1024)
    err = problem(external(f'{{openai_api_base: "http://127.0.0.1:9/v1", note: "{big}"}}'))
    assert "'served_entities.0.external_model.openai_config': it holds more than 65536 bytes" in err.problem
    err = problem(external('{openai_api_base: "http://127.0.0.1:9/v1"}', tags=f'{{note: "{big}"}}'))
    assert err.line == 4 and err.problem.startswith("endpoint 'vendor': Invalid 'tags': it holds more than 65536 bytes")


@pytest.mark.django_db
def test_a_config_300_deep_is_never_stored_and_the_last_good_config_stays(tmp_path):
    # orjson refuses more than 254 levels: stored, it would make every list of endpoints fail.
    path = tmp_path / "endpoints.yaml"
    path.write_text(external('{openai_api_base: "http://127.0.0.1:9/v1"}'))
    apply(load_file(path))
    nested = "{a: " * 300 + "1" + "}" * 300
    for deep in (f'{{openai_api_base: "http://127.0.0.1:9/v1", deep: {nested}}}',  # written out
                 f'{{openai_api_base: "http://127.0.0.1:9/v1", deep: {chain(300)}}}'):  # made with aliases
        path.write_text(external(deep))
        with pytest.raises(ConfigError) as info:
            load_file(path)
        assert info.value.line == 10 and "levels deep" in info.value.problem
        assert "openai_config" in info.value.problem
    assert ServingEndpoint.objects.get(name="vendor").entities.get().config == {"openai_api_base": "http://127.0.0.1:9/v1"}
