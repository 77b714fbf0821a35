"""Provider types beyond plain OpenAI, against the mock upstream."""
from helpers import chat, sse_data, stream_text


def test_azure_deployment_urls_and_api_key_header(gateway, mock):
    gw = gateway(
        providers={"az": {"type": "azure", "base_url": mock.url,
                          "api_key_env": "SLUICE_IT_UPSTREAM_KEY",
                          "api_version": "2024-10-21"}},
        models={"azm": {"targets": [{"provider": "az",
                                     "model": "my-deploy"}]}})
    r = chat(gw.port, "hello azure", model="azm")
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "hello azure"
    seen = mock.requests()[-1]
    assert seen["path"].startswith(
        "/openai/deployments/my-deploy/chat/completions"), seen["path"]
    assert "api-version=2024-10-21" in seen["path"], seen["path"]
    assert seen["headers"]["api-key"] == "sk-sluice-integration-0123456789"
    assert "authorization" not in seen["headers"]
    r = chat(gw.port, "a b c", model="azm", stream=True)
    assert stream_text(sse_data(r.body)) == "a b c"
    r = chat(gw.port, "x", model="az/bad deploy")
    assert r.status in (400, 404), r
