// fp8lm report DIR... (docs/report.md): one self-contained HTML file (inline SVG, no script,
// no network) from run folders (metrics.jsonl, summary.json, telemetry.jsonl) and experiment
// folders (experiment.json): losses of several runs overlaid, learning rate, grad norm and
// skipped steps, scale and amax histories and underflow/saturation heat maps per role,
// memory per category, communication bytes, and the experiments' figures.
#include <array>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/svg_plot.h"
#include "core/check.h"
#include "core/file.h"

namespace fp8lm::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json parse_json(const std::string& path, const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  if (!fs::exists(path)) return out;
  std::istringstream in(read_text_file(path));
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const json::exception& e) {
      fail(path, ": line ", line_no, ": not valid JSON: ", e.what());
    }
  }
  return out;
}

double num(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

struct Run {
  std::string name;
  std::vector<json> metrics, telemetry;
  json summary;
};

std::string h2(const std::string& s) { return "<h2>" + html_escape(s) + "</h2>\n"; }

Series metric_series(const Run& r, const char* key, bool markers = false) {
  Series s{r.name, {}, {}, markers};
  for (const json& m : r.metrics)
    if (m.contains(key)) {
      s.x.push_back(num(m, "step"));
      s.y.push_back(num(m, key));
    }
  return s;
}

std::string runs_section(const std::vector<Run>& runs) {
  std::string o = h2("Runs");
  o += "<table><tr><th>run</th><th>level</th><th>steps</th><th>final train</th><th>final val</th>"
       "<th>tokens/s</th><th>skipped</th><th>alarms</th><th>B/param (states)</th></tr>\n";
  for (const Run& r : runs) {
    const json& s = r.summary;
    auto cell = [&](const char* k) {
      const auto it = s.find(k);
      if (it == s.end() || it->is_null()) return std::string("–");
      if (it->is_number_float()) {
        char b[32];
        std::snprintf(b, sizeof b, "%.4f", it->get<double>());
        return std::string(b);
      }
      return html_escape(it->is_string() ? it->get<std::string>() : it->dump());
    };
    const size_t alarms = s.contains("alarms") && s["alarms"].is_array() ? s["alarms"].size() : 0;
    char bpp[32] = "–";
    if (s.contains("bytes_per_param"))
      std::snprintf(bpp, sizeof bpp, "%.2f", num(s["bytes_per_param"], "model_states"));
    o += "<tr><td>" + html_escape(r.name) + "</td><td>" + cell("level") + "</td><td>" +
         cell("steps") + "</td><td>" + cell("final_train_loss") + "</td><td>" +
         cell("final_val_loss") + "</td><td>" + cell("tokens_per_s") + "</td><td>" +
         cell("skipped_steps") + "</td><td>" + std::to_string(alarms) + "</td><td>" + bpp +
         "</td></tr>\n";
  }
  o += "</table>\n";
  std::vector<Series> loss, val, lr, norm, skipped;
  for (const Run& r : runs) {
    loss.push_back(metric_series(r, "loss"));
    val.push_back(metric_series(r, "val_loss", true));
    lr.push_back(metric_series(r, "lr"));
    norm.push_back(metric_series(r, "grad_norm"));
    Series sk{r.name, {}, {}, true};
    for (const json& m : r.metrics)
      if (m.value("skipped", false)) {
        sk.x.push_back(num(m, "step"));
        sk.y.push_back(1);
      }
    skipped.push_back(sk);
  }
  o += "<div class=\"row\">" + line_chart({"Training loss", "step", "loss"}, loss) +
       line_chart({"Validation loss", "step", "loss"}, val) + "</div>\n";
  o += "<div class=\"row\">" + line_chart({"Learning rate", "step", "lr"}, lr) +
       line_chart({"Gradient norm (before clipping)", "step", "norm", false, true}, norm) +
       "</div>\n";
  size_t n_skipped = 0;
  for (const Series& s : skipped) n_skipped += s.x.size();
  o += "<p>Skipped steps (non-finite gradients or update): " + std::to_string(n_skipped) +
       "</p>\n";
  if (n_skipped > 0) o += line_chart({"Skipped steps", "step", ""}, skipped);

  // Memory per category and communication per step, one bar per run and category.
  std::vector<std::string> labels, comm_labels;
  std::vector<double> mib, comm;
  for (const Run& r : runs) {
    if (r.summary.contains("peak_mib_by_category"))
      for (const auto& [k, v] : r.summary["peak_mib_by_category"].items())
        if (v.is_number() && v.get<double>() > 0) {
          labels.push_back(r.name + " " + k);
          mib.push_back(v.get<double>());
        }
    if (r.summary.contains("comm_bytes_per_step"))
      for (const auto& [k, v] : r.summary["comm_bytes_per_step"].items())
        if (v.is_number()) {
          comm_labels.push_back(r.name + " " + k);
          comm.push_back(v.get<double>());
        }
  }
  if (!labels.empty()) o += bar_chart("Peak memory per category", labels, mib, "MiB");
  if (!comm_labels.empty())
    o += bar_chart("Communication per step", comm_labels, comm, "bytes");
  else
    o += "<p>No communication (one process).</p>\n";
  return o;
}

std::string telemetry_section(const Run& r) {
  if (r.telemetry.empty()) return "";
  std::string o = h2("FP8 telemetry: " + r.name);
  // role → tensor → step → record
  std::map<std::string, std::map<std::string, std::map<int64_t, const json*>>> by_role;
  std::set<int64_t> steps;
  for (const json& t : r.telemetry) {
    const std::string role = t.value("role", "?");
    const int64_t step = t.value("step", int64_t{0});
    by_role[role][t.value("tensor", "?")][step] = &t;
    steps.insert(step);
  }
  std::vector<std::string> cols;
  for (int64_t s : steps) cols.push_back("step " + std::to_string(s));
  for (const auto& [role, tensors] : by_role) {
    std::vector<Series> scale, amax;
    std::vector<std::string> rows;
    std::vector<std::vector<double>> under, sat;
    for (const auto& [tensor, recs] : tensors) {
      Series sc{tensor, {}, {}, false}, am{tensor, {}, {}, false};
      rows.push_back(tensor);
      under.emplace_back();
      sat.emplace_back();
      for (int64_t s : steps) {
        const auto it = recs.find(s);
        const json* rec = it == recs.end() ? nullptr : it->second;
        under.back().push_back(rec ? num(*rec, "underflow") * 100 : NAN);
        sat.back().push_back(rec ? num(*rec, "saturated") * 100 : NAN);
        if (!rec) continue;
        sc.x.push_back(static_cast<double>(s));
        sc.y.push_back(num(*rec, "scale_max"));
        am.x.push_back(static_cast<double>(s));
        am.y.push_back(num(*rec, "amax"));
      }
      scale.push_back(sc);
      amax.push_back(am);
    }
    double umax = 0, smax = 0;
    for (const auto& row : under)
      for (double v : row)
        if (std::isfinite(v)) umax = std::max(umax, v);
    for (const auto& row : sat)
      for (double v : row)
        if (std::isfinite(v)) smax = std::max(smax, v);
    o += "<h3>role " + html_escape(role) + "</h3>\n";
    // Legends of many tensors would drown the chart: the first 12 are drawn.
    if (scale.size() > 12) {
      scale.resize(12);
      amax.resize(12);
    }
    o += "<div class=\"row\">" +
         line_chart({"scale_inv (" + role + ")", "step", "scale_inv", false, true}, scale) +
         line_chart({"amax (" + role + ")", "step", "amax", false, true}, amax) + "</div>\n";
    o += heat_map("Underflow, " + role + " (tensor × step)", rows, cols, under,
                  std::max(umax, 1e-9), "%");
    o += heat_map("Saturation, " + role + " (tensor × step)", rows, cols, sat,
                  std::max(smax, 1e-9), "%");
  }
  return o;
}

std::string grad_experiment_section(const std::string& name, const json& e) {
  std::string o = h2("Experiment " + name);
  const bool formats = name == "formats";
  // (N) → series per mode/format of snr, underflow, saturated over the steps.
  std::map<int, std::map<std::string, std::array<Series, 3>>> by_n;
  for (const json& p : e.value("points", json::array())) {
    const int n = p.value("ranks", 0);
    const std::string key = formats ? p.value("format", "?") : p.value("mode", "?");
    auto& s = by_n[n][key];
    const json& st = p.value("stats", json::object());
    const double step = num(p, "step");
    const double vals[3] = {num(st, "snr_db"), num(st, "underflow") * 100,
                            num(st, "saturated") * 100};
    for (int k = 0; k < 3; ++k) {
      s[k].name = key;
      s[k].x.push_back(step);
      s[k].y.push_back(vals[k]);
    }
  }
  const char* titles[3] = {"SNR (dB)", "underflow (%)", "saturated (%)"};
  for (const auto& [n, keys] : by_n) {
    o += "<div class=\"row\">";
    for (int k = 0; k < 3; ++k) {
      std::vector<Series> ss;
      for (const auto& [key, s] : keys) ss.push_back(s[k]);
      o += line_chart({std::string(titles[k]) + ", N = " + std::to_string(n), "step", titles[k]},
                      ss, 380, 240);
    }
    o += "</div>\n";
  }
  o += "<table><tr><th>N</th><th>mode</th><th>format</th><th>SNR dB</th><th>underflow %</th>"
       "<th>saturated %</th></tr>\n";
  for (const json& r : e.value("summary", json::array())) {
    char b[256];
    std::snprintf(b, sizeof b,
                  "<tr><td>%d</td><td>%s</td><td>%s</td><td>%.2f</td><td>%.3f</td><td>%.4f</td></tr>\n",
                  r.value("ranks", 0), html_escape(r.value("mode", "")).c_str(),
                  html_escape(r.value("format", "")).c_str(), num(r, "snr_db"),
                  100 * num(r, "underflow"), 100 * num(r, "saturated"));
    o += b;
  }
  return o + "</table>\n";
}

std::string decoupling_section(const json& e) {
  std::string o = h2("Experiment precision-decoupling");
  std::vector<Series> loss, val;
  o += "<table><tr><th>row</th><th>formats</th><th>final train</th><th>final val</th></tr>\n";
  for (const json& r : e.value("rows", json::array())) {
    const std::string id = "#" + r.value("id", "?");
    Series l{id, {}, {}, false}, v{id, {}, {}, true};
    for (const json& m : r.value("metrics", json::array())) {
      if (m.contains("loss")) {
        l.x.push_back(num(m, "step"));
        l.y.push_back(num(m, "loss"));
      }
      if (m.contains("val_loss")) {
        v.x.push_back(num(m, "step"));
        v.y.push_back(num(m, "val_loss"));
      }
    }
    loss.push_back(l);
    val.push_back(v);
    char b[512];
    std::snprintf(b, sizeof b, "<tr><td>%s</td><td>%s</td><td>%.4f</td><td>%.4f</td></tr>\n",
                  id.c_str(), html_escape(r.value("what", "")).c_str(), num(r, "final_train_loss"),
                  num(r, "final_val_loss"));
    o += b;
  }
  o += "</table>\n<div class=\"row\">" + line_chart({"Training loss per row", "step", "loss"}, loss) +
       line_chart({"Validation loss per row", "step", "loss"}, val) + "</div>\n";
  return o;
}

std::string zero_section(const json& e) {
  std::string o = h2("Experiment zero-placement");
  std::map<std::string, Series> ratio, over_split;
  for (const json& r : e.value("rows", json::array())) {
    const std::string m = r.value("model", "?");
    ratio[m].name = over_split[m].name = m;
    ratio[m].x.push_back(num(r, "ranks"));
    ratio[m].y.push_back(num(r, "max_over_min"));
    over_split[m].x.push_back(num(r, "ranks"));
    over_split[m].y.push_back(num(r, "max_over_split"));
  }
  std::vector<Series> a, b;
  for (auto& [m, s] : ratio) a.push_back(s);
  for (auto& [m, s] : over_split) b.push_back(s);
  return o + "<div class=\"row\">" +
         line_chart({"Greedy placement: fullest / emptiest rank", "ranks", "max/min", true, false}, a) +
         line_chart({"Greedy fullest rank / element split", "ranks", "ratio", true, false}, b) +
         "</div>\n";
}

struct ReportOptions {
  std::vector<std::string> dirs;
  std::string out = "report.html";
};

void run_report(const ReportOptions& o) {
  apply_global_options();
  std::vector<Run> runs;
  std::string experiments;
  for (const std::string& dir : o.dirs) {
    const std::string exp_path = dir + "/experiment.json";
    if (fs::exists(exp_path)) {
      const json e = parse_json(exp_path, read_text_file(exp_path));
      const std::string name = e.value("experiment", "");
      if (name == "grad-scaling" || name == "formats")
        experiments += grad_experiment_section(name, e);
      else if (name == "precision-decoupling")
        experiments += decoupling_section(e);
      else if (name == "zero-placement")
        experiments += zero_section(e);
      else
        fail(exp_path, ": unknown experiment '", name, "'");
      continue;
    }
    if (!fs::exists(dir + "/metrics.jsonl"))
      fail(dir, ": neither a run folder (metrics.jsonl) nor an experiment (experiment.json)");
    Run r;
    r.name = fs::path(dir).filename().string();
    if (r.name.empty()) r.name = fs::path(dir).parent_path().filename().string();
    r.metrics = read_jsonl(dir + "/metrics.jsonl");
    r.telemetry = read_jsonl(dir + "/telemetry.jsonl");
    const std::string sp = dir + "/summary.json";
    r.summary = fs::exists(sp) ? parse_json(sp, read_text_file(sp)) : json::object();
    runs.push_back(std::move(r));
  }
  std::string body;
  if (!runs.empty()) body += runs_section(runs);
  for (const Run& r : runs) body += telemetry_section(r);
  body += experiments;
  const std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<title>fp8lm report</title>\n<style>\n"
      "body{font:14px sans-serif;margin:20px;color:#222}h2{border-bottom:1px solid #ccc}"
      "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;"
      "text-align:right}th{background:#f3f3f3}.row{display:flex;flex-wrap:wrap;gap:8px}"
      "svg text{font:11px sans-serif;fill:#222}svg .title{font-weight:bold;font-size:12px}"
      "svg .small{font-size:9px}svg .frame{fill:none;stroke:#888}svg .grid{stroke:#eee}\n"
      "</style></head><body>\n<h1>fp8lm report</h1>\n<p>" +
      html_escape(std::to_string(o.dirs.size())) + " folder(s): " + [&] {
        std::string s;
        for (const std::string& d : o.dirs) s += (s.empty() ? "" : ", ") + html_escape(d);
        return s;
      }() + "</p>\n" + body + "</body></html>\n";
  write_text_atomic(o.out, html);
  std::printf("wrote %s (%zu runs, %zu bytes)\n", o.out.c_str(), runs.size(), html.size());
}

}  // namespace

void register_report(CLI::App& app) {
  auto o = std::make_shared<ReportOptions>();
  CLI::App* sub = app.add_subcommand(
      "report", "One self-contained HTML report of run folders and experiment folders");
  sub->add_option("dirs", o->dirs, "Run folders and experiment folders")->required();
  sub->add_option("--out", o->out, "Output HTML file")->capture_default_str();
  sub->callback([o] { run_report(*o); });
}

}  // namespace fp8lm::cli
