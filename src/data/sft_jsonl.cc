#include "data/sft_jsonl.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace fp8lm {
namespace {

using nlohmann::json;

struct Builder {
  const Tokenizer& tok;
  Example e;
  void add(const std::vector<int32_t>& ids, bool target) {
    for (const int32_t id : ids) {
      e.tokens.push_back(static_cast<uint16_t>(id));
      e.mask.push_back(target ? 1 : 0);
    }
  }
  void text(const std::string& s, bool target) { add(tok.encode(s), target); }
  void eot(bool target) { add({tok.eot()}, target); }
};

const std::string& string_at(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail(where, ": missing key \"", key, "\"");
  if (!j[key].is_string()) fail(where, ": \"", key, "\" is not a string");
  return j[key].get_ref<const std::string&>();
}

Example render(const json& j, const Tokenizer& tok, const std::string& where) {
  Builder b{tok, {}};
  b.eot(false);
  if (j.contains("messages")) {
    const json& msgs = j["messages"];
    if (!msgs.is_array() || msgs.empty()) fail(where, ": \"messages\" is not a non-empty array");
    bool assistant = false;
    for (size_t i = 0; i < msgs.size(); ++i) {
      const std::string w = where + ": messages[" + std::to_string(i) + "]";
      if (!msgs[i].is_object()) fail(w, ": not an object");
      const std::string& role = string_at(msgs[i], "role", w);
      const std::string& content = string_at(msgs[i], "content", w);
      const char* name = role == "system" ? "System" : role == "user" ? "User"
                         : role == "assistant" ? "Assistant" : nullptr;
      if (name == nullptr)
        fail(w, ": role \"", role, "\" (system, user or assistant)");
      b.text(std::string(i > 0 ? "\n\n" : "") + name + ":", false);
      if (role != "assistant") {
        b.text(" " + content, false);
        continue;
      }
      if (content.empty()) fail(w, ": empty assistant content");
      b.text(" " + content, true);
      b.eot(true);
      assistant = true;
    }
    if (!assistant) fail(where, ": no assistant message to learn");
    return b.e;
  }
  if (!j.contains("prompt") && !j.contains("response"))
    fail(where, ": neither \"prompt\"/\"response\" nor \"messages\"");
  const std::string& prompt = string_at(j, "prompt", where);
  const std::string& response = string_at(j, "response", where);
  if (response.empty()) fail(where, ": empty response");
  b.text(prompt, false);
  b.text(response, true);
  b.eot(true);
  return b.e;
}


// Calls `each(json, "path:line")` for every non-blank line of the JSONL file `path`.
void for_each_line(const std::string& path,
                   const std::function<void(const json&, const std::string&)>& each) {
  if (!std::filesystem::exists(path)) fail(path, ": cannot open (no such file)");
  if (!std::filesystem::is_regular_file(path)) fail(path, ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::string line;
  size_t lines = 0;
  for (size_t n = 1; std::getline(in, line); ++n) {
    const std::string where = path + ":" + std::to_string(n);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail(where, ": not valid JSON (", e.what(), ")");
    }
    if (!j.is_object()) fail(where, ": not a JSON object");
    each(j, where);
    ++lines;
  }
  if (in.bad()) fail(path, ": read error");
  if (lines == 0) fail(path, ": no examples");
}

// render(), refusing an example longer than max_tokens.
Example render_within(const json& j, const Tokenizer& tok, const std::string& where,
                      size_t max_tokens) {
  Example e = render(j, tok, where);
  if (e.tokens.size() > max_tokens)
    fail(where, ": ", e.tokens.size(), " tokens, more than --max-tokens ", max_tokens,
         " (model.seq_len + 1)");
  return e;
}

}  // namespace

std::vector<Example> read_sft_jsonl(const std::string& path, const Tokenizer& tok,
                                    size_t max_tokens) {
  std::vector<Example> out;
  for_each_line(path, [&](const json& j, const std::string& where) {
    out.push_back(render_within(j, tok, where, max_tokens));
  });
  return out;
}

std::vector<Example> read_pairs_jsonl(const std::string& path, const Tokenizer& tok,
                                      size_t max_tokens) {
  std::vector<Example> out;
  for_each_line(path, [&](const json& j, const std::string& where) {
    const std::string& chosen = string_at(j, "chosen", where);
    const std::string& rejected = string_at(j, "rejected", where);
    string_at(j, "prompt", where);
    if (chosen.empty() || rejected.empty())
      fail(where, ": empty \"", chosen.empty() ? "chosen" : "rejected", "\" response");
    if (chosen == rejected) fail(where, ": \"chosen\" and \"rejected\" are the same response");
    for (const std::string* r : {&chosen, &rejected})
      out.push_back(render_within({{"prompt", j["prompt"]}, {"response", *r}}, tok, where, max_tokens));
  });
  return out;
}

bool is_pairs_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const json j = json::parse(line);
      return j.is_object() && j.contains("chosen");
    } catch (const json::exception&) {
      return false;  // read_sft_jsonl reports it
    }
  }
  return false;
}

std::vector<PromptLine> read_prompts_jsonl(const std::string& path) {
  std::vector<PromptLine> out;
  for_each_line(path, [&](const json& j, const std::string& where) {
    PromptLine p;
    p.prompt = string_at(j, "prompt", where);
    p.where = where;
    p.line = j.dump();
    if (j.contains("pattern")) {
      p.pattern = string_at(j, "pattern", where);
      p.has_pattern = true;
    }
    for (const char* key : {"response", "answer"})
      if (j.contains(key)) {
        p.reference = string_at(j, key, where);
        p.has_reference = true;
        break;
      }
    out.push_back(std::move(p));
  });
  return out;
}

std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const std::string& prompt) {
  std::vector<int32_t> t{tok.eot()};
  const std::vector<int32_t> p = tok.encode(prompt);
  t.insert(t.end(), p.begin(), p.end());
  return t;
}

}  // namespace fp8lm
