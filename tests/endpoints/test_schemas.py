import pytest

from endpoints.errors import ServingError
from endpoints.schemas import CHAT, COMPLETIONS, EMBEDDINGS, ChatRequest, parse


def error_of(task, body) -> ServingError:
    with pytest.raises(ServingError) as info:
        parse(task, body, endpoint="ep")
    assert info.value.status == 400
    return info.value


def test_it_parses_a_minimal_chat_request():
    req = parse(CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(req, ChatRequest)
    assert req.messages[0].text() == "hi"
    assert req.generation_params() == {}


def test_it_normalises_stop_to_a_list_and_reports_only_set_params():
    req = parse(CHAT, {"messages": [{"role": "user", "content": "hi"}], "stop": "END", "max_tokens": 5, "n": 2})
    assert req.stop_list == ["END"]
    assert req.generation_params() == {"max_tokens": 5, "stop": ["END"], "n": 2}


def test_it_takes_max_completion_tokens_as_max_tokens():
    req = parse(CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7})
    assert req.max_tokens == 7


def test_it_names_an_unknown_role():
    err = error_of(CHAT, {"messages": [{"role": "wizard", "content": "hi"}]})
    assert "messages[0].role" in err.message and "wizard" in err.message


def test_it_rejects_empty_messages():
    assert error_of(CHAT, {"messages": []}).message == "'messages' must not be empty."


def test_it_names_an_out_of_range_temperature_and_its_value():
    err = error_of(CHAT, {"messages": [{"role": "user", "content": "hi"}], "temperature": 5})
    assert "'temperature'" in err.message and "2" in err.message and "(got 5)" in err.message


def test_it_names_a_wrong_type():
    err = error_of(CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"})
    assert "'max_tokens'" in err.message and "integer" in err.message


def test_it_rejects_unknown_parameters_instead_of_ignoring_them():
    err = error_of(CHAT, {"messages": [{"role": "user", "content": "hi"}], "temprature": 0.5})
    assert "Unknown parameter 'temprature'" in err.message


def test_it_explains_a_task_mismatch():
    err = error_of(EMBEDDINGS, {"messages": [{"role": "user", "content": "hi"}]})
    assert "llm/v1/embeddings" in err.message and "'input'" in err.message and "'messages'" in err.message


def test_it_explains_dataframe_inputs_are_for_custom_models():
    err = error_of(CHAT, {"dataframe_records": [{"a": 1}]})
    assert "custom-model" in err.message and "'messages'" in err.message


def test_it_requires_the_task_key_field():
    assert "'prompt'" in error_of(COMPLETIONS, {"max_tokens": 3}).message


def test_it_rejects_a_non_object_body():
    assert "JSON object" in error_of(CHAT, [1, 2]).message


def test_it_rejects_empty_embedding_inputs_and_token_ids():
    assert "empty" in error_of(EMBEDDINGS, {"input": ""}).message
    assert "token-id" in error_of(EMBEDDINGS, {"input": [[1, 2, 3]]}).message


def test_it_bounds_n():
    err = error_of(CHAT, {"messages": [{"role": "user", "content": "hi"}], "n": 99})
    assert "'n'" in err.message


def test_assistant_tool_call_turns_need_no_content():
    req = parse(CHAT, {"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}, {"role": "user", "content": "x"}]})
    assert req.messages[0].content is None
    err = error_of(CHAT, {"messages": [{"role": "user"}]})
    assert "needs 'content'" in err.message
