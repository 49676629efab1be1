import Foundation
import Training
import XCTest

/// `kdgpu train` and `kdgpu export` end to end on the tiny fixture teacher and a small generated corpus, on the CPU backend.
final class TrainCommandTests: XCTestCase {
    private let teacher = Kdgpu.tinyModel

    private func kdgpu(_ arguments: [String], environment: [String: String] = [:]) throws -> KdgpuRun {
        try Kdgpu.run(arguments, environment: environment)
    }

    private func folder(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-train-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: url)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A corpus of random words (deterministic), about 25,000 byte-level tokens.
    private func corpus() throws -> URL {
        let directory = try folder("corpus")
        let words = "the of and to in that is was he for it with as his on be at by had are but from or have an they which".split(separator: " ")
        var state: UInt64 = 42
        let text = (0..<5000).map { _ -> Substring in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return words[Int(state >> 33) % words.count]
        }.joined(separator: " ")
        try text.write(to: directory.appendingPathComponent("words.txt"), atomically: true, encoding: .utf8)
        return directory
    }

    /// A run of the tiny teacher; `studentLayers` nil leaves the student to other flags (`--student-shape`).
    private func trainArguments(data: URL, out: URL, studentLayers: String? = "0") -> [String] {
        ["train", "--teacher", teacher, "--data", data.path] + (studentLayers.map { ["--student-layers", $0] } ?? []) + ["--steps", "6", "--batch-size", "2",
         "--seq-len", "32", "--eval-every", "3", "--checkpoint-every", "3", "--device", "cpu", "--out", out.path]
    }

    private func metrics(_ out: URL) throws -> [[String: Any]] {
        try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// A run killed with SIGKILL after step 4 (its last checkpoint at step 3) and resumed logs the
    /// same losses as an uninterrupted run.
    func testKilledAndResumedRunContinuesExactly() throws {
        try assertKilledAndResumedRunContinuesExactly(data: try corpus(), extra: [])
    }

    /// The same in mixed precision (bf16 student and teacher): the checkpoint keeps the fp32 master
    /// weights, from which the resumed run remakes the bf16 compute copies.
    func testMixedPrecisionRunResumesExactly() throws {
        try assertKilledAndResumedRunContinuesExactly(data: try corpus(), extra: ["--precision", "bf16", "--teacher-precision", "bf16"],
                                                      logMentions: "student bf16 (fp32 master weights, stochastic rounding), teacher bf16")
    }

    /// `--teacher-precision auto` (the default) runs the teacher in bf16 exactly where bf16 GEMMs take
    /// the processor's own bf16 instructions: the processor's route (native with amx_bf16, or
    /// avx512_bf16 on AMD, as /proc/cpuinfo lists them; widened elsewhere), or the one KDGPU_BF16_GEMM
    /// sets or measures, named in the log.
    func testAutoTeacherPrecisionFollowsTheBF16GemmRoute() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let lines = cpuinfo.split(separator: "\n")
        let flags = Set(lines.first { $0.hasPrefix("flags") }?.split(separator: " ").map(String.init) ?? [])
        let amd = lines.first { $0.hasPrefix("vendor_id") }?.contains("AuthenticAMD") ?? false
        let hasBF16Instructions = flags.contains("avx512_bf16") || flags.contains("amx_bf16")
        let processorsRoute = flags.contains("amx_bf16") || (amd && flags.contains("avx512_bf16")) ? "oneDNN's bf16 matmul" : "widened to fp32"
        // (KDGPU_BF16_GEMM, the route and reason the log must name, the teacher's precision); "measure": either route.
        var cases: [(String?, String, String?)] = [(nil, processorsRoute + " (", processorsRoute == "widened to fp32" ? "fp32" : "bf16"),
                                                   ("widened", "widened to fp32 (set by KDGPU_BF16_GEMM=widened)", "fp32"),
                                                   ("measure", "(KDGPU_BF16_GEMM=measure: oneDNN's bf16 matmul measured at ", nil)]
        if hasBF16Instructions { cases.append(("native", "oneDNN's bf16 matmul (set by KDGPU_BF16_GEMM=native)", "bf16")) }
        for (route, logged, teacher) in cases {
            let run = try kdgpu(trainArguments(data: try corpus(), out: try folder("auto-\(route ?? "processor")")) + ["--steps", "1"],
                                environment: route.map { ["KDGPU_BF16_GEMM": $0] } ?? [:])
            XCTAssertEqual(run.status, 0, run.error)
            let gemms = run.error.split(separator: "\n").first { $0.contains("GEMMs: ") }.map(String.init) ?? run.error
            XCTAssertTrue(gemms.contains(logged), gemms)
            let native = gemms.contains("bf16 inputs: oneDNN's bf16 matmul")
            XCTAssertTrue(native || gemms.contains("bf16 inputs: widened to fp32"), gemms)
            XCTAssertFalse(native && !hasBF16Instructions && route != "native", gemms)
            XCTAssertTrue(run.error.contains("teacher \(teacher ?? (native ? "bf16" : "fp32")) (auto)"), run.error)
        }
    }

    /// The teacher's matrices expanded once (`--teacher-weights expanded`, and `auto` where that fits,
    /// as for the tiny teacher) train exactly as when every forward expands them afresh (`quantized`):
    /// the same losses step by step, in fp32 and with the teacher in bf16; the log says which.
    func testExpandedTeacherTrainsExactlyAsTheQuantizedOne() throws {
        let data = try corpus()
        for precision in ["fp32", "bf16"] {
            var losses: [String: [String]] = [:]
            for holding in ["quantized", "expanded", "auto"] {
                let out = try folder("weights-\(holding)-\(precision)")
                let run = try kdgpu(trainArguments(data: data, out: out) + ["--steps", "3", "--teacher-precision", precision, "--teacher-weights", holding])
                XCTAssertEqual(run.status, 0, run.error)
                let line = run.error.split(separator: "\n").first { $0.contains("teacher weights:") }.map(String.init) ?? run.error
                XCTAssertTrue(line.contains(holding == "quantized" ? "quantized, expanded at every forward" : "expanded once to \(precision) ("), line)
                XCTAssertEqual(line.hasSuffix("(auto)"), holding == "auto", line)
                losses[holding] = try metrics(out).compactMap { record in
                    record["loss"].map { "step \(record["step"] ?? "?") loss \($0) kd \(record["kd_loss"] ?? "-") grad \(record["grad_norm"] ?? "-")" }
                }
            }
            XCTAssertEqual(losses["quantized"]?.count, 3)
            XCTAssertEqual(losses["expanded"], losses["quantized"], "teacher in \(precision)")
            XCTAssertEqual(losses["auto"], losses["quantized"], "teacher in \(precision)")
        }
    }

    /// The same from a teacher cache (sampled targets, the teacher's cross-entropy for DTS from the
    /// cache), which the teacher-cache CLI builds and shows.
    func testRunFromATeacherCacheTrainsAndResumesExactly() throws {
        let data = try corpus(), cache = try folder("cache").appendingPathComponent("targets")
        let build = try kdgpu(["teacher-cache", "build", "--teacher", teacher, "--data", data.path, "--seq-len", "32", "--targets", "sampled:16",
                               "--device", "cpu", "--out", cache.path])
        XCTAssertEqual(build.status, 0, build.error)
        XCTAssertTrue(build.output.contains("complete") && build.output.contains("bytes/token"), build.output)
        let window = try kdgpu(["teacher-cache", "show", cache.path, "--window", "2", "--json"])
        XCTAssertEqual(window.status, 0, window.error)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(window.output.utf8)) as? [String: Any])
        let targets = try XCTUnwrap(object["targets"] as? [[String: Any]])
        XCTAssertEqual((object["tokens"] as? [Int])?.count, 32)
        XCTAssertEqual(targets.count, 31)
        for target in targets {
            let pairs = try XCTUnwrap(target["pairs"] as? [[Double]])
            XCTAssertEqual(pairs.reduce(0) { $0 + $1[1] }, 1, accuracy: 1e-9, "sampled counts / N add up to 1")
        }
        try assertKilledAndResumedRunContinuesExactly(data: data, extra: ["--teacher-cache", cache.path, "--temperature-schedule", "dts"])
        // A cache of other windows is refused before any work, naming the setting.
        let refused = try kdgpu(trainArguments(data: data, out: try folder("refused")) + ["--teacher-cache", cache.path, "--seq-len", "16"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("teacher_cache (--teacher-cache)") && refused.error.contains("--seq-len 32"), refused.error)
    }

    /// `--sparsify-teacher SPEC` makes the live teacher's targets as a cache of that form stores
    /// them, so it takes the steps of a run from such a cache; a form past a cache's byte counts
    /// (N > 255) runs too, and the dense-only settings are refused naming the flag.
    func testSparsifiedTeacherTakesTheStepsOfItsCache() throws {
        let data = try corpus(), cache = try folder("sparsify-cache").appendingPathComponent("targets")
        let build = try kdgpu(["teacher-cache", "build", "--teacher", teacher, "--data", data.path, "--seq-len", "32", "--targets", "systematic:12",
                               "--device", "cpu", "--out", cache.path])
        XCTAssertEqual(build.status, 0, build.error)
        let cached = try folder("from-cache"), sparsified = try folder("sparsified"), large = try folder("sparsified-large")
        let fromCache = try kdgpu(trainArguments(data: data, out: cached) + ["--teacher-cache", cache.path])
        XCTAssertEqual(fromCache.status, 0, fromCache.error)
        let onTheFly = try kdgpu(trainArguments(data: data, out: sparsified) + ["--sparsify-teacher", "systematic:12", "--teacher-precision", "fp32"])
        XCTAssertEqual(onTheFly.status, 0, onTheFly.error)
        XCTAssertTrue(onTheFly.error.contains("made sparse at every step as a systematic:12 cache"), onTheFly.error)
        let keys = ["loss", "kd_loss", "ce_loss", "grad_norm"]
        func steps(_ out: URL) throws -> [[Double]] {
            try metrics(out).filter { $0["loss"] != nil }.map { record in keys.map { (record[$0] as? Double) ?? .nan } }
        }
        let expected = try steps(cached), got = try steps(sparsified)
        XCTAssertEqual(got.count, 6)
        XCTAssertEqual(got.count, expected.count)
        for (step, (a, b)) in zip(got, expected).enumerated() {
            for (key, (x, y)) in zip(keys, zip(a, b)) {
                XCTAssertEqual(x, y, accuracy: 1e-5 * max(1, abs(y)), "step \(step + 1) \(key)")
            }
        }
        let beyondACache = try kdgpu(trainArguments(data: data, out: large) + ["--sparsify-teacher", "systematic:4000", "--teacher-precision", "fp32"])
        XCTAssertEqual(beyondACache.status, 0, beyondACache.error)
        // 4000 evenly spaced draws land within 1/4000 of every probability: the first step's loss is the dense one's but for the entropy.
        let denseOut = try folder("dense")
        let dense = try kdgpu(trainArguments(data: data, out: denseOut) + ["--teacher-precision", "fp32"])
        XCTAssertEqual(dense.status, 0, dense.error)
        let firstLarge = try XCTUnwrap(try metrics(large).first { $0["loss"] != nil }), firstDense = try XCTUnwrap(try metrics(denseOut).first { $0["loss"] != nil })
        XCTAssertEqual(firstLarge["ce_loss"] as! Double, firstDense["ce_loss"] as! Double, "the same student at step 1")
        XCTAssertEqual(firstLarge["grad_norm"] as! Double, firstDense["grad_norm"] as! Double, accuracy: 0.01 * (firstDense["grad_norm"] as! Double))
        let refused = try kdgpu(trainArguments(data: data, out: try folder("sparsify-refused")) + ["--sparsify-teacher", "sampled:8", "--hint-weight", "1"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("sparsify_teacher (--sparsify-teacher)") && refused.error.contains("--hint-weight"), refused.error)
    }

    private func assertKilledAndResumedRunContinuesExactly(data: URL, extra: [String], logMentions: String? = nil) throws {
        let whole = try folder("whole"), interrupted = try folder("interrupted")
        let uninterrupted = try kdgpu(trainArguments(data: data, out: whole) + extra)
        XCTAssertEqual(uninterrupted.status, 0, uninterrupted.error)
        if let logMentions { XCTAssertTrue(uninterrupted.error.contains(logMentions), uninterrupted.error) }
        XCTAssertTrue(uninterrupted.output.contains("student, after 6 steps:"), uninterrupted.output)
        for file in ["metrics.jsonl", "loss.svg", "student.gguf", "checkpoint/model.safetensors", "checkpoint/config.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: whole.appendingPathComponent(file).path), file)
        }

        let killed = try kdgpu(trainArguments(data: data, out: interrupted) + extra, environment: ["KDGPU_KILL_AFTER_STEP": "4"])
        XCTAssertTrue(killed.signaled && killed.status == SIGKILL, "status \(killed.status): \(killed.error)")
        XCTAssertEqual(try metrics(interrupted).compactMap { $0["loss"] }.count, 4, "steps 1-4 were logged before the kill")
        let resumed = try kdgpu(["train", "--resume", interrupted.path, "--steps", "6", "--device", "cpu"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("resumed from \(interrupted.path) at step 3"), resumed.error)

        let keys = ["step", "loss", "kd_loss", "ce_loss", "lr", "temperature", "grad_norm", "val_nll", "batch_source", "val_on_policy_rkl"]
        func comparable(_ records: [[String: Any]]) -> [String] {
            records.map { record in keys.compactMap { key in record[key].map { "\(key)=\($0)" } }.joined(separator: " ") }
        }
        XCTAssertEqual(comparable(try metrics(interrupted)), comparable(try metrics(whole)))
        let rollouts = whole.appendingPathComponent("rollouts.jsonl"), resumedRollouts = interrupted.appendingPathComponent("rollouts.jsonl")
        if FileManager.default.fileExists(atPath: rollouts.path) {
            XCTAssertEqual(try String(contentsOf: resumedRollouts, encoding: .utf8), try String(contentsOf: rollouts, encoding: .utf8),
                           "the resumed run samples the same sequences, and drops the lines of the steps it redid")
        }
    }

    /// On-policy steps, sequence-level KD, the replay buffer and the adaptive schedule together:
    /// killed after step 4 and resumed from step 3, the run samples the same sequences (the source
    /// of each step, the buffer's replays, the adaptive fraction) and logs the same losses.
    func testOnPolicyRunWithReplayResumesExactly() throws {
        let extra = ["--on-policy-fraction", "0.5", "--seq-kd", "true", "--prompt-tokens", "8", "--rollout-tokens", "16",
                     "--replay-capacity", "6", "--replay-ratio", "1", "--on-policy-schedule", "adaptive", "--adaptive-loss-eps", "0.0001",
                     "--eval-rollouts", "4"]
        try assertKilledAndResumedRunContinuesExactly(data: try corpus(), extra: extra, logMentions: "student samples with probability 0.5 (adaptive)")
        let sources = try metrics(FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-train-whole-\(getpid())"))
        XCTAssertEqual(Set(sources.compactMap { $0["batch_source"] as? String }), ["student", "teacher", "replay"],
                       "seed 0 draws all three sources in six steps (the test relies on it)")
        for record in sources where record["batch_source"] != nil {
            XCTAssertEqual(record["on_policy"] as? Bool, record["batch_source"] as? String == "student")
        }
        XCTAssertTrue(sources.contains { $0["val_on_policy_rkl"] is Double })
    }

    /// The loss of an on-policy step equals an independent computation over the sampled ids: the
    /// numpy float64 llama forward and divergence of bench/reference/check_on_policy.py, whose
    /// output (Fixtures/on-policy-*.json) holds the ids this seed samples and the reference loss, for
    /// the divergence (jsd) and for the per-token reverse-KL estimator. To remake them: keep these
    /// runs (KDGPU_KEEP_ON_POLICY_RUN=DIR keeps DIR/NAME) and run `python3 bench/reference/check_on_policy.py
    /// DIR/NAME --fixture Tests/CLITests/Fixtures/on-policy-NAME.json`.
    func testOnPolicyStepLossEqualsNumpyReference() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let data = try corpus()
        // Prompts from a file: of 1 to 12 tokens, left-padded in the sampling batch, right-padded in the step's.
        let prompts = ["--prompts", fixtures.appendingPathComponent("prompts.jsonl").path]
        for (name, objective) in [("jsd", ["--divergence", "jsd(0.5)"]), ("sampled-rkl", ["--on-policy-loss", "sampled-rkl"]),
                                  ("prompts", ["--divergence", "fkl"] + prompts)] {
            let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent("on-policy-\(name).json"))) as! [String: Any]
            let out = try ProcessInfo.processInfo.environment["KDGPU_KEEP_ON_POLICY_RUN"].map { URL(fileURLWithPath: $0).appendingPathComponent(name) }
                ?? folder("on-policy-\(name)")
            let run = try kdgpu(["train", "--teacher", Kdgpu.tinyModel.replacingOccurrences(of: "q8_0", with: "f32"), "--data", data.path,
                                 "--student-layers", "1", "--steps", "1", "--batch-size", "3", "--gradient-accumulation", "2", "--seq-len", "32",
                                 "--device", "cpu", "--teacher-precision", "fp32", "--out", out.path, "--seed", "5", "--on-policy-fraction", "1",
                                 "--prompt-tokens", "7", "--rollout-tokens", "13", "--temperature", "1.5", "--hard-weight", "0.2"] + objective)
            XCTAssertEqual(run.status, 0, run.error)
            let rollouts = try String(contentsOf: out.appendingPathComponent("rollouts.jsonl"), encoding: .utf8).split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
            let expected = reference["sequences"] as! [[String: Any]]
            XCTAssertEqual(rollouts.map { $0["prompt_ids"] as! [Int] }, expected.map { $0["prompt_ids"] as! [Int] }, "prompts: the windows' first 7 tokens, or the file's")
            XCTAssertEqual(rollouts.map { $0["completion_ids"] as! [Int] }, expected.map { $0["completion_ids"] as! [Int] }, "the seed's samples")
            XCTAssertEqual(rollouts.map { $0["source"] as! String }, Array(repeating: "student", count: 6))
            let step = try metrics(out).first { $0["loss"] != nil }!
            let loss = step["loss"] as! Double, expectedLoss = reference["reference_loss"] as! Double
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-4 * abs(expectedLoss), "\(name): kdgpu \(loss), numpy float64 \(expectedLoss)")
            XCTAssertEqual(step["batch_source"] as? String, "student")
            XCTAssertEqual(step["on_policy"] as? Bool, true)
        }
    }

    func testExportWritesGGUFAndSafetensorsThatLoad() throws {
        let data = try corpus(), out = try folder("export")
        XCTAssertEqual(try kdgpu(trainArguments(data: data, out: out) + ["--export-gguf", "none"]).status, 0)
        let gguf = out.appendingPathComponent("exported.gguf")
        // Nothing but the checkpoint: the tokenizer is the one it keeps, from any working directory.
        let elsewhere = try folder("export-cwd")
        let export = try Kdgpu.run(["export", "--checkpoint", out.path, "--format", "gguf", "--type", "f32", "--out", gguf.path],
                                   workingDirectory: elsewhere)
        XCTAssertEqual(export.status, 0, export.error)
        let hf = out.appendingPathComponent("hf")
        XCTAssertEqual(try Kdgpu.run(["export", "--checkpoint", out.path, "--format", "safetensors", "--out", hf.path], workingDirectory: elsewhere).status, 0)
        for file in ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: hf.appendingPathComponent(file).path), file)
        }
        // A checkpoint without its tokenizer (an older kdgpu's) is an error that says how to give one, not a GGUF without one.
        let old = out.appendingPathComponent("checkpoint/tokenizer.json")
        try FileManager.default.removeItem(at: old)
        let refused = try kdgpu(["export", "--checkpoint", out.path, "--format", "gguf", "--out", out.appendingPathComponent("none.gguf").path])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("has no tokenizer") && refused.error.contains("--tokenizer-from"), refused.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("none.gguf").path))
        let given = try kdgpu(["export", "--checkpoint", out.path, "--format", "gguf", "--tokenizer-from", teacher, "--out", out.appendingPathComponent("given.gguf").path])
        XCTAssertEqual(given.status, 0, given.error)
        // The exported GGUF runs, and its tokenizer is the teacher's.
        let tokens = try kdgpu(["tokenize", "--model", gguf.path, "in the"])
        XCTAssertEqual(tokens.output, "259 258\n")
        let eval = try kdgpu(["eval", "--model", gguf.path, "--data", data.appendingPathComponent("words.txt").path, "--seq-len", "32",
                              "--json", "--device", "cpu"])
        XCTAssertEqual(eval.status, 0, eval.error)
    }

    /// A freshly initialized student of a given shape trains and exports too.
    func testFreshStudentOfAGivenShapeTrains() throws {
        let data = try corpus(), out = try folder("fresh")
        var arguments = trainArguments(data: data, out: out, studentLayers: nil)
        arguments += ["--student-shape", "blocks=2,width=32,heads=2,kv_heads=1,feed_forward=64", "--steps", "3"]
        let run = try kdgpu(arguments)
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.error.contains("student: 2 fresh blocks, width 32, 2 heads (1 key/value), feed-forward 64"), run.error)
        let records = try metrics(out).filter { $0["loss"] != nil }
        XCTAssertEqual(records.count, 3)
        XCTAssertTrue(records.allSatisfy { ($0["loss"] as? Double)?.isFinite == true })
        let bad = try kdgpu(trainArguments(data: data, out: out, studentLayers: nil) + ["--student-shape", "blocks=2,width=32"])
        XCTAssertTrue(bad.error.contains("student_shape (--student-shape): 'blocks=2,width=32' lacks heads=N"), bad.error)
        let both = try kdgpu(trainArguments(data: data, out: out) + ["--student-shape", "blocks=2,width=32,heads=2,kv_heads=1,feed_forward=64"])
        XCTAssertTrue(both.error.contains("--student-shape") && both.error.contains("--student-layers") && both.error.contains("exclude each other"), both.error)
    }

    /// The logit lens joins the loss and is logged as its own part.
    func testLogitLensTrainsAndIsLogged() throws {
        let data = try corpus(), out = try folder("lens")
        let run = try kdgpu(trainArguments(data: data, out: out) + ["--steps", "3", "--lens-weight", "0.5", "--lens-layers", "0:1"])
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.error.contains("logit lens: weight 0.5, jsd(0.5), block pairs 0:1, after the final norm"), run.error)
        XCTAssertTrue(run.error.contains("step 3/3  loss") && run.error.contains(", lens "), run.error)
        let records = try metrics(out).filter { $0["loss"] != nil }
        XCTAssertEqual(records.count, 3)
        for record in records {
            let lens = try XCTUnwrap(record["lens_loss"] as? Double)
            XCTAssertTrue(lens.isFinite && lens >= 0, "\(record)")
        }
    }

    /// Every feature loss at once (logit lens, attention alignment, hints through a learned
    /// projection, since the fresh student is narrower than the teacher): each part is logged, the
    /// alignment module and the projections are checkpointed, and a killed run resumed without
    /// `--device` continues on the run's device with the same losses.
    func testFeatureLossesTrainAreLoggedAndResumeExactly() throws {
        let data = try corpus(), whole = try folder("features"), interrupted = try folder("features-interrupted")
        let arguments = ["--student-shape", "blocks=2,width=32,heads=2,kv_heads=1,feed_forward=64", "--lens-weight", "0.5",
                         "--attn-align-weight", "2", "--attn-align-layers", "0:1,1:1", "--hint-weight", "1", "--hint-loss", "mse"]
        let run = try kdgpu(trainArguments(data: data, out: whole, studentLayers: nil) + arguments)
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.error.contains("attention alignment: weight 2.0 (x0.9 per epoch), student blocks 0,1 (4 maps) to teacher blocks 1 (4 heads)"), run.error)
        XCTAssertTrue(run.error.contains("hidden-state hints: weight 1.0, mse, block pairs 0:0,1:1, through learned projections 32 -> 64"), run.error)
        XCTAssertTrue(run.error.contains(", lens ") && run.error.contains(", hint ") && run.error.contains(", align "), run.error)
        let records = try metrics(whole).filter { $0["loss"] != nil }
        XCTAssertEqual(records.count, 6)
        for record in records {
            for key in ["lens_loss", "hint_loss", "align_loss"] {
                let value = try XCTUnwrap(record[key] as? Double, "\(key) in \(record)")
                XCTAssertTrue(value.isFinite && value > 0, "\(key) in \(record)")
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: whole.appendingPathComponent("checkpoint/auxiliary.safetensors").path))

        let killed = try kdgpu(trainArguments(data: data, out: interrupted, studentLayers: nil) + arguments, environment: ["KDGPU_KILL_AFTER_STEP": "4"])
        XCTAssertTrue(killed.signaled && killed.status == SIGKILL, "status \(killed.status): \(killed.error)")
        let resumed = try kdgpu(["train", "--resume", interrupted.path, "--steps", "6"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("on cpu"), resumed.error)
        let keys = ["step", "loss", "kd_loss", "lens_loss", "hint_loss", "align_loss", "grad_norm", "val_nll"]
        func comparable(_ records: [[String: Any]]) -> [String] {
            records.map { record in keys.compactMap { key in record[key].map { "\(key)=\($0)" } }.joined(separator: " ") }
        }
        XCTAssertEqual(comparable(try metrics(interrupted)), comparable(try metrics(whole)))
    }

    /// Every YAML key is also a flag (the two reach the run through the same checks), and the
    /// errors name both.
    func testEveryConfigurationKeyHasItsFlag() throws {
        let help = try kdgpu(["train", "--help"])
        XCTAssertEqual(help.status, 0, help.error)
        for key in TrainingConfig.validKeys {
            XCTAssertTrue(help.output.contains(TrainingConfig.flag(of: key) + " "), "kdgpu train --help lacks \(TrainingConfig.flag(of: key)) for \(key)")
        }
    }

    func testBadTrainingInputsAreOneLineErrors() throws {
        let data = try corpus(), out = try folder("bad")
        let yaml = out.appendingPathComponent("config.yaml")
        try "steps: 3\nlearning_rate: 0.1\n".write(to: yaml, atomically: true, encoding: .utf8)
        let tiny = out.appendingPathComponent("tiny.txt")
        try "in the".write(to: tiny, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["train", "--config", yaml.path], "unknown key 'learning_rate'; valid keys: teacher, data,"),
            (trainArguments(data: tiny, out: out), "fewer than one window"),
            (trainArguments(data: data, out: out) + ["--seq-len", "100"], "seq_len (--seq-len): 100 exceeds the teacher's context length 64"),
            (trainArguments(data: data, out: out) + ["--divergence", "kl2"], "divergence (--divergence): unknown 'kl2'"),
            (["train", "--resume", out.appendingPathComponent("nothing").path, "--steps", "2"], "no checkpoint to resume"),
            (trainArguments(data: data, out: out) + ["--lr", "1e30"], "non-finite"),
        ]
        for (arguments, expected) in cases {
            let run = try kdgpu(arguments)
            XCTAssertEqual(run.status, 1, "\(arguments): \(run.error)")
            XCTAssertTrue(run.error.contains(expected), "\(arguments): \(run.error)")
            XCTAssertFalse(run.error.contains("Fatal error"), run.error)
        }
    }

    // MARK: data parallel (mpirun)

    /// `mpirun` of Open MPI, which `make test` installs (scripts/setup.sh).
    private func mpirun() throws -> URL {
        let url = URL(fileURLWithPath: "/usr/bin/mpirun")
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw MissingTool("no /usr/bin/mpirun: `make test` installs Open MPI (Debian's openmpi-bin); run it, or apt-get install openmpi-bin")
        }
        return url
    }

    /// `kdgpu ARGUMENTS` on `ranks` processes under mpirun (as root when the tests run as root), ended after 3 minutes at most.
    private func kdgpuRanks(_ ranks: Int, _ arguments: [String], environment: [String: String] = [:]) throws -> KdgpuRun {
        let launcher = ["--oversubscribe", "--timeout", "180", "-np", String(ranks)] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
        return try Kdgpu.run(launcher + [Kdgpu.builtExecutable.path] + arguments, environment: environment, executable: try mpirun(), timeout: 200)
    }

    /// Two ranks with micro-batches of 2 take the optimizer steps one process takes with micro-batches
    /// of 2 and a gradient accumulation of 2 (micro-batch i of a step on rank i): the same losses and
    /// gradient norms within 1e-4, the same validation; rank 0 alone writes. A rank killed at step 4
    /// ends the whole job with an error; the checkpoint of step 3 resumes on two ranks exactly, and a
    /// resume on one process is refused, naming both counts.
    func testTwoRanksStepAsOneProcessWithTwiceTheAccumulationAndResumeExactly() throws {
        let data = try corpus(), one = try folder("one-process"), two = try folder("two-ranks"), killed = try folder("killed-rank")
        let single = try kdgpu(trainArguments(data: data, out: one) + ["--gradient-accumulation", "2"])
        XCTAssertEqual(single.status, 0, single.error)
        let pair = try kdgpuRanks(2, trainArguments(data: data, out: two))
        XCTAssertEqual(pair.status, 0, pair.error)
        XCTAssertTrue(pair.error.contains("data parallel: 2 processes"), pair.error)
        XCTAssertEqual(pair.output.components(separatedBy: "validation perplexity").count, 2, "one rank reports: \(pair.output)")
        let (expected, measured) = (try metrics(one), try metrics(two))
        XCTAssertEqual(expected.count, measured.count)
        for (a, b) in zip(expected, measured) {
            XCTAssertEqual(a["step"] as? Int, b["step"] as? Int)
            XCTAssertNil(a["allreduce_s"], "one process reduces nothing")
            if b["loss"] != nil {
                let share = try XCTUnwrap(b["allreduce_share"] as? Double, "each step's all-reduce wait under mpirun")
                XCTAssertTrue((0...1).contains(share) && (b["allreduce_s"] as? Double ?? -1) >= 0, "\(b)")
            }
            for key in ["loss", "ce_loss", "kd_loss", "grad_norm", "val_nll"] {
                guard let x = a[key] as? Double else { continue }
                let y = try XCTUnwrap(b[key] as? Double, key)
                XCTAssertEqual(y, x, accuracy: 1e-4 * max(abs(x), 1e-3), "\(key) at step \(a["step"] ?? "?")")
            }
        }

        let died = try kdgpuRanks(2, trainArguments(data: data, out: killed), environment: ["KDGPU_KILL_AFTER_STEP": "4", "KDGPU_KILL_RANK": "1"])
        XCTAssertNotEqual(died.status, 0, "the job ends when a rank dies: \(died.error)")
        XCTAssertEqual(TrainingCheckpointProbe.step(in: killed), 3, "the checkpoint of step 3 is intact")
        let resumed = try kdgpuRanks(2, ["train", "--resume", killed.path, "--steps", "6", "--device", "cpu"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        let keys = ["step", "loss", "grad_norm", "val_nll"]
        func comparable(_ records: [[String: Any]]) -> [String] {
            records.map { record in keys.compactMap { key in record[key].map { "\(key)=\($0)" } }.joined(separator: " ") }
        }
        XCTAssertEqual(comparable(try metrics(killed)), comparable(measured))
        let alone = try kdgpu(["train", "--resume", killed.path, "--steps", "8", "--device", "cpu"])
        XCTAssertEqual(alone.status, 1)
        XCTAssertTrue(alone.error.contains("written by 2 processes (mpirun -np 2), this run has 1"), alone.error)
    }

    /// The all-reduce overlapped with the backward (the head's and the embedding's spans sent before
    /// the blocks' backward, each block's as it finishes, the rest after) sums what the all-reduce
    /// after the backward sums. With the untied heads of the inherited student and one micro-batch a rank, on the CPU backend
    /// (its own storage lent) and on an OpenCL device (each span's range mapped while the kernels go on
    /// with the others), two ranks take the same steps either way bit for bit; with a fresh student's tied
    /// head, whose last micro-batch's embedding rows are summed over the ranks on their own, within
    /// 1e-4 (the rows are added in another order).
    func testOverlappedAllReduceTakesTheStepsOfTheAllReduceAfterTheBackward() throws {
        let data = try corpus()
        let tied = ["--student-shape", "blocks=2,width=32,heads=4,kv_heads=2,feed_forward=48"]
        for (device, student) in [("cpu", "untied"), ("opencl", "untied"), ("cpu", "tied")] {
            var runs: [String: URL] = [:]
            for overlap in ["off", "on"] {
                let out = try folder("overlap-\(device)-\(student)-\(overlap)")
                let arguments = trainArguments(data: data, out: out, studentLayers: student == "tied" ? nil : "0").map { $0 == "cpu" ? device : $0 }
                    + (student == "tied" ? tied : []) + ["--overlap-allreduce", overlap]
                let pair = try kdgpuRanks(2, arguments)
                XCTAssertEqual(pair.status, 0, pair.error)
                XCTAssertTrue(pair.error.contains(overlap == "on" ? "gradient all-reduce: overlapped with the backward" : "(overlap_allreduce off)"), pair.error)
                runs[overlap] = out
            }
            let (after, overlapped) = (try metrics(runs["off"]!), try metrics(runs["on"]!))
            XCTAssertEqual(after.count, overlapped.count)
            for (a, b) in zip(after, overlapped) {
                for key in ["loss", "ce_loss", "kd_loss", "grad_norm", "val_nll"] {
                    guard let x = a[key] as? Double else { continue }
                    let y = try XCTUnwrap(b[key] as? Double, key)
                    XCTAssertEqual(y, x, accuracy: student == "tied" ? 1e-4 * max(abs(x), 1e-3) : 0, "\(device), \(student): \(key) at step \(a["step"] ?? "?")")
                }
            }
            guard student == "untied" else { continue }
            for file in ["model.safetensors", "optimizer.safetensors"] {
                let path = "step-00000006/\(file)"
                XCTAssertEqual(try Data(contentsOf: runs["on"]!.appendingPathComponent(path)), try Data(contentsOf: runs["off"]!.appendingPathComponent(path)),
                               "\(device): \(path)")
            }
        }
    }

    /// Gradients as bf16 between the ranks (`--allreduce-dtype bf16`): the same run as in fp32 up to
    /// bf16's rounding of the gradients (the first step's loss, computed before any all-reduce, equal;
    /// the gradient norms and later losses within 1e-2, and not all equal: the rounding happens), and
    /// the overlapped path (spans lent to the communication thread) takes the steps of the path after
    /// the backward bit for bit, since each element is rounded and summed alike in either.
    func testGradientsInBF16BetweenRanksFollowTheFP32Run() throws {
        let data = try corpus()
        var runs: [String: URL] = [:]
        for (name, flags) in [("fp32", ["--allreduce-dtype", "fp32"]), ("bf16", ["--allreduce-dtype", "bf16", "--overlap-allreduce", "off"]),
                              ("bf16-overlapped", ["--allreduce-dtype", "bf16", "--overlap-allreduce", "on"])] {
            let out = try folder("wire-\(name)")
            let pair = try kdgpuRanks(2, trainArguments(data: data, out: out, studentLayers: "0") + flags)
            XCTAssertEqual(pair.status, 0, pair.error)
            XCTAssertEqual(pair.error.contains("in bf16 (allreduce_dtype bf16)"), name != "fp32", pair.error)
            runs[name] = out
        }
        let (fp32, bf16, overlapped) = (try metrics(runs["fp32"]!), try metrics(runs["bf16"]!), try metrics(runs["bf16-overlapped"]!))
        XCTAssertEqual(fp32.count, bf16.count)
        var differs = false
        for (a, b) in zip(fp32, bf16) {
            for key in ["loss", "ce_loss", "kd_loss", "grad_norm", "val_nll"] {
                guard let x = a[key] as? Double else { continue }
                let y = try XCTUnwrap(b[key] as? Double, key)
                if a["step"] as? Int == 1 && key != "grad_norm" {
                    XCTAssertEqual(y, x, "\(key) at step 1, before any all-reduce")
                } else {
                    XCTAssertEqual(y, x, accuracy: 1e-2 * max(abs(x), 1e-3), "\(key) at step \(a["step"] ?? "?")")
                }
                differs = differs || x != y
            }
        }
        XCTAssertTrue(differs, "bf16 on the wire rounds the gradients, so some value differs from the fp32 run")
        XCTAssertEqual(bf16.count, overlapped.count)
        for (a, b) in zip(bf16, overlapped) {
            for key in ["loss", "grad_norm", "val_nll"] {
                guard let x = a[key] as? Double else { continue }
                XCTAssertEqual(b[key] as? Double, x, "overlapped bf16: \(key) at step \(a["step"] ?? "?")")
            }
        }
    }

    /// Every rank takes rank 0's bf16 GEMM route: with KDGPU_BF16_GEMM set on rank 0 alone (an MPMD
    /// launch), two ranks take the steps of one process with it set. The route decides `--teacher-precision
    /// auto` (bf16 or fp32), which parts the losses past the 1e-4 the ranks are held to, and one of the
    /// two routes is the one rank 1 would not have taken on its own, on any processor.
    func testEveryRankTakesRankZerosBF16Route() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        guard cpuinfo.contains("avx512_bf16") || cpuinfo.contains("amx_bf16") else {
            throw XCTSkip("no bf16 instructions on this processor: oneDNN's native bf16 route, one of the two shared, does not run here")
        }
        let data = try corpus()
        func close(_ a: [[String: Any]], _ b: [[String: Any]]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { x, y in
                ["loss", "kd_loss"].allSatisfy { key in
                    guard let u = x[key] as? Double else { return true }
                    guard let v = y[key] as? Double else { return false }
                    return abs(u - v) <= 1e-4 * max(abs(u), 1e-3)
                }
            }
        }
        var single: [String: [[String: Any]]] = [:]
        for route in ["native", "widened"] {
            let out = try folder("one-process-\(route)")
            let run = try kdgpu(trainArguments(data: data, out: out) + ["--gradient-accumulation", "2"], environment: ["KDGPU_BF16_GEMM": route])
            XCTAssertEqual(run.status, 0, run.error)
            single[route] = try metrics(out)
        }
        XCTAssertFalse(close(single["native"]!, single["widened"]!), "the routes' auto teachers (bf16, fp32) part the losses, so the test can tell")
        for route in ["native", "widened"] {
            let out = try folder("two-ranks-\(route)")
            let kdgpu = [Kdgpu.builtExecutable.path] + trainArguments(data: data, out: out)
            let launch = ["--oversubscribe", "--timeout", "180"] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
                + ["-np", "1", "/usr/bin/env", "KDGPU_BF16_GEMM=\(route)"] + kdgpu + [":", "-np", "1"] + kdgpu
            let pair = try Kdgpu.run(launch, environment: [:], executable: try mpirun(), timeout: 200)
            XCTAssertEqual(pair.status, 0, pair.error)
            XCTAssertTrue(close(try metrics(out), single[route]!), "rank 1 takes rank 0's route (\(route))")
        }
    }

    /// On-policy and sequence-level steps under mpirun: every rank draws the same source for a step
    /// and samples its micro-batches from the seed of (step, micro-batch), so two ranks take the steps
    /// one process takes with twice the accumulation (the same sources and losses); the replay buffer,
    /// which one rank would decide, is refused under mpirun.
    func testTwoRanksSampleAsOneProcessWithTwiceTheAccumulation() throws {
        let data = try corpus(), one = try folder("on-policy-one"), two = try folder("on-policy-two")
        let sampling = ["--on-policy-fraction", "0.5", "--seq-kd", "true", "--prompt-tokens", "8", "--rollout-tokens", "16"]
        let single = try kdgpu(trainArguments(data: data, out: one) + ["--gradient-accumulation", "2"] + sampling)
        XCTAssertEqual(single.status, 0, single.error)
        let pair = try kdgpuRanks(2, trainArguments(data: data, out: two) + sampling)
        XCTAssertEqual(pair.status, 0, pair.error)
        let (expected, measured) = (try metrics(one), try metrics(two))
        XCTAssertEqual(expected.compactMap { $0["batch_source"] as? String }, measured.compactMap { $0["batch_source"] as? String })
        XCTAssertEqual(Set(expected.compactMap { $0["batch_source"] as? String }), ["student", "teacher"])
        for (a, b) in zip(expected, measured) {
            for key in ["loss", "grad_norm", "val_nll"] {
                guard let x = a[key] as? Double else { continue }
                XCTAssertEqual(try XCTUnwrap(b[key] as? Double, key), x, accuracy: 1e-4 * max(abs(x), 1e-3), "\(key) at step \(a["step"] ?? "?")")
            }
        }
        let replay = try kdgpuRanks(2, trainArguments(data: data, out: try folder("on-policy-replay")) + sampling + ["--replay-capacity", "8"])
        XCTAssertEqual(replay.status, 1, replay.error)
        XCTAssertTrue(replay.error.contains("replay_capacity") && replay.error.contains("mpirun"), replay.error)
    }

    /// Two ranks build the teacher cache one process builds, shard for shard (13 shards: the last
    /// round has none for rank 1), rank 0 alone writing the manifest and printing; and two ranks
    /// continue a build one process stopped after 9 shards, to the same files.
    func testTwoRanksBuildTheTeacherCacheOneProcessBuilds() throws {
        let data = try corpus(), one = try folder("cache-one").appendingPathComponent("targets")
        let two = try folder("cache-two").appendingPathComponent("targets"), continued = try folder("cache-continued").appendingPathComponent("targets")
        func build(_ out: URL, ranks: Int) throws -> KdgpuRun {
            let arguments = ["teacher-cache", "build", "--teacher", teacher, "--data", data.path, "--seq-len", "32", "--targets", "systematic:12",
                             "--windows-per-shard", "41", "--device", "cpu", "--out", out.path]
            // One thread a process either way, so that both sum the teacher's GEMMs alike.
            let threads = ["KDGPU_THREADS": "1", "OMP_NUM_THREADS": "1"]
            return ranks == 1 ? try kdgpu(arguments, environment: threads) : try kdgpuRanks(ranks, arguments, environment: threads)
        }
        func manifest(_ folder: URL) throws -> [String: Any] {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("manifest.json"))) as? [String: Any])
        }
        func shards(_ folder: URL) throws -> [[String: AnyHashable]] { try XCTUnwrap(manifest(folder)["shards"] as? [[String: AnyHashable]]) }
        let single = try build(one, ranks: 1)
        XCTAssertEqual(single.status, 0, single.error)
        let pair = try build(two, ranks: 2)
        XCTAssertEqual(pair.status, 0, pair.error)
        XCTAssertTrue(pair.error.contains("2 processes (mpirun)"), pair.error)
        XCTAssertEqual(pair.output.components(separatedBy: "bytes/token over").count, 2, "one rank prints the summary: \(pair.output)")
        let expected = try shards(one)
        XCTAssertEqual(expected.count, 13, "an odd count of shards, for a last round without a shard for rank 1")
        XCTAssertEqual(try shards(two), expected)
        XCTAssertEqual(try manifest(two)["complete"] as? Bool, true)
        for shard in expected {
            let name = try XCTUnwrap(shard["file"] as? String)
            XCTAssertEqual(try Data(contentsOf: two.appendingPathComponent(name)), try Data(contentsOf: one.appendingPathComponent(name)), name)
        }

        // A build one process stopped after 9 shards (its manifest lists 9; shard 9's file is half written).
        try FileManager.default.copyItem(at: one, to: continued)
        var stopped = try manifest(continued)
        stopped["shards"] = Array(expected.prefix(9))
        stopped["complete"] = false
        try JSONSerialization.data(withJSONObject: stopped, options: [.sortedKeys]).write(to: continued.appendingPathComponent("manifest.json"))
        let ninth = continued.appendingPathComponent(try XCTUnwrap(expected[9]["file"] as? String))
        try Data(try Data(contentsOf: ninth).prefix(100)).write(to: ninth)
        let resumed = try build(continued, ranks: 2)
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("continuing \(continued.path) at shard 9 of 13"), resumed.error)
        XCTAssertEqual(try shards(continued), expected)
        XCTAssertEqual(try Data(contentsOf: ninth), try Data(contentsOf: one.appendingPathComponent(ninth.lastPathComponent)))
    }

    /// A setting only one rank finds bad (its entry of a --device list) is that rank's one-line error,
    /// and the job ends at once, not waiting in a collective.
    func testABadSettingOnOneRankEndsTheJobWithItsError() throws {
        let run = try kdgpuRanks(2, trainArguments(data: try corpus(), out: try folder("bad-rank")).map { $0 == "cpu" ? "cpu,no-such-device" : $0 })
        XCTAssertFalse(run.timedOut)
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.error.contains("kdgpu: rank 1 of 2:") && run.error.contains("no-such-device"), run.error)
    }
}

struct MissingTool: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The step of a run folder's current checkpoint, read from its trainer state (nil when there is none).
enum TrainingCheckpointProbe {
    static func step(in run: URL) -> Int? {
        let state = run.appendingPathComponent("checkpoint/trainer_state.json")
        guard let data = try? Data(contentsOf: state), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["step"] as? Int
    }
}
