import Foundation
import Training
import XCTest

/// The learning-rate, temperature and TAID schedules against their formulas (losses.md), step by step.
final class ScheduleTests: XCTestCase {
    func testLearningRateWarmsUpLinearlyThenDecaysByCosine() {
        let schedule = LearningRateSchedule(peak: 1e-3, warmupSteps: 4, totalSteps: 14, minimumFraction: 0.1)
        XCTAssertEqual(schedule.rate(at: 1), 2.5e-4, accuracy: 1e-9)
        XCTAssertEqual(schedule.rate(at: 4), 1e-3, accuracy: 1e-9)
        XCTAssertEqual(schedule.rate(at: 9), 1e-3 * (0.1 + 0.9 * 0.5), accuracy: 1e-8, "halfway through the decay")
        XCTAssertEqual(schedule.rate(at: 14), 1e-4, accuracy: 1e-9)
    }

    func testTAIDFollowsItsUpdateRule() {
        var taid = TAIDSchedule()
        XCTAssertEqual(taid.t, 0.4)
        // First step: no previous loss, so momentum stays 0 and t = max(linear, t + a sigmoid(0) (1 - t)).
        taid.update(loss: 2, step: 1, totalSteps: 100)
        XCTAssertEqual(taid.t, max(0.4 + 0.6 * 0.01, 0.4 + 5e-4 * 0.5 * 0.6), accuracy: 1e-7)
        // A falling loss raises the momentum: delta = (2 - 1) / 2.
        let before = taid.t
        taid.update(loss: 1, step: 2, totalSteps: 100)
        XCTAssertEqual(taid.momentum, 0.01 * 0.5, accuracy: 1e-7)
        let adaptive = before + 5e-4 * (1 / (1 + exp(-taid.momentum))) * (1 - before)
        XCTAssertEqual(taid.t, max(0.4 + 0.6 * 0.02, adaptive), accuracy: 1e-7)
        for step in 3...100 { taid.update(loss: 1, step: step, totalSteps: 100) }
        XCTAssertEqual(taid.t, 1, accuracy: 1e-6, "t reaches t_end at the last step")
    }

    func testDynamicTemperatureIsClampedSmoothedAndRaisedByTheGap() {
        var noGap = DynamicTemperature(initial: 3)
        noGap.update(progress: 1, studentCrossEntropy: 2, teacherCrossEntropy: 2)
        // Target: cosine 0 at the end, clamped up to T_min = 1; T = 0.9 * 3 + 0.1 * 1.
        XCTAssertEqual(noGap.current, 2.8, accuracy: 1e-6)
        var gap = DynamicTemperature(initial: 3)
        gap.update(progress: 0.5, studentCrossEntropy: 3, teacherCrossEntropy: 2)
        // Target: 3 * 0.5 * (1 + 1/2) = 2.25; T = 0.9 * 3 + 0.1 * 2.25.
        XCTAssertEqual(gap.current, 2.925, accuracy: 1e-6)
    }

    func testStudentLayersParsing() throws {
        XCTAssertEqual(try StudentLayers.parse("every:5", teacherLayers: 30), [0, 5, 10, 15, 20, 25])
        XCTAssertEqual(try StudentLayers.parse("0, 6,12,18,24,29", teacherLayers: 30), [0, 6, 12, 18, 24, 29])
        for bad in ["every:0", "3,1", "0,30", "a,b", "1,1"] {
            XCTAssertThrowsError(try StudentLayers.parse(bad, teacherLayers: 30), bad) { XCTAssertTrue("\($0)".contains("student_layers"), "\($0)") }
        }
    }

    func testYAMLConfigOverridesDefaultsAndRejectsUnknownKeys() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-config-\(getpid()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try "steps: 7\ndivergence: jsd(0.3)\ntemperature: 1.5\nstudent_layers: \"0,2\"\n".write(to: file, atomically: true, encoding: .utf8)
        let config = try TrainingConfig.load(yamlFile: file.path)
        XCTAssertEqual(config.steps, 7)
        XCTAssertEqual(config.divergence, "jsd(0.3)")
        XCTAssertEqual(config.temperature, 1.5)
        XCTAssertEqual(config.batchSize, TrainingConfig().batchSize)
        try "steps: seven\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainingConfig.load(yamlFile: file.path)) { XCTAssertTrue("\($0)".contains("key 'steps' is 'seven'; it takes an integer"), "\($0)") }
    }
}
