// libFuzzer target: the batch scorer's chunk reader and CSV/JSON Lines parsing, end to end on a file.
import Foundation
import Components
import Registry
import Scoring

let scorer: Scorer = {
    do {
        return try Scorer(try ModelDocument.decode(try Data(contentsOf: URL(fileURLWithPath: "fixtures/sklearn-credit-model.json"))))
    } catch {
        fatalError("cannot load the credit model: \(error) (run from the repository's root)")
    }
}()
/// On tmpfs where there is one: outputs are committed with fsync, which a disk makes slow.
let folder = (FileManager.default.fileExists(atPath: "/dev/shm") ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory)
    .appendingPathComponent("switchyard-fuzz-csv-\(getpid())")

/// The first byte picks the format and the chunk size; the rest is the file. Every row read is
/// scored or rejected, and the file's digest covers every byte. The file planned as a split run
/// (a task every few chunks) gives the same digest, tasks that cover it end to end, and parts
/// that put together are the whole file's output and rejects byte for byte, with the same counts.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let name = data[0] & 1 == 0 ? "in.csv" : "in.jsonl"
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let input = folder.appendingPathComponent(name)
    guard (try? Data(bytes).write(to: input)) != nil else { fatalError("cannot write \(input.path)") }
    var runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: folder.appendingPathComponent("out"), workers: 2)
    runner.chunkBytes = 64 + Int(data[0] >> 1) * 32
    runner.maxRecordBytes = 256
    try? FileManager.default.createDirectory(at: runner.outputDirectory, withIntermediateDirectories: true)
    let result = runner.score(input, progress: BatchProgress())
    if result.rowsRead != result.rowsScored + result.rowsRejected { fatalError("rows lost: \(result)") }
    if result.error == nil && result.input.sha256 != SHA256.hex(bytes) { fatalError("the digest does not cover the file") }
    guard result.error == nil else { return 0 }
    let plan = runner.plan(input, taskBytes: runner.chunkBytes * 2)
    guard plan.error == nil, plan.input == result.input, plan.tasks.first?.start == 0, plan.tasks.last?.end == Int64(bytes.count),
          zip(plan.tasks, plan.tasks.dropFirst()).allSatisfy({ $0.end == $1.start })
    else { fatalError("the plan does not cover the file: \(plan.tasks) \(plan.input) \(String(describing: plan.error))") }
    var output: [UInt8] = [], rejects: [UInt8] = []
    var read = 0, scored = 0, rejected = 0
    for (i, task) in plan.tasks.enumerated() {
        var part = task
        part.output = folder.appendingPathComponent("part-\(i).out")
        part.rejects = folder.appendingPathComponent("part-\(i).rejects")
        let scoredPart = runner.score(input, part: part, progress: BatchProgress())
        if let error = scoredPart.error { fatalError("task \(i) of \(plan.tasks.count) failed where the whole file did not: \(error)") }
        (read, scored, rejected) = (read + scoredPart.rowsRead, scored + scoredPart.rowsScored, rejected + scoredPart.rowsRejected)
        output += contents(part.output!)
        rejects += contents(part.rejects!)
    }
    if (read, scored, rejected) != (result.rowsRead, result.rowsScored, result.rowsRejected) { fatalError("the parts count differently: \((read, scored, rejected)) \(result)") }
    if output != contents(runner.outputURL(for: input)) { fatalError("the parts' output differs from the whole file's") }
    if rejects != contents(runner.rejectsURL(for: input)) { fatalError("the parts' rejects differ from the whole file's") }
    return 0
}

/// A file's bytes, read with read(2) (Foundation's Data(contentsOf:) shows as a leak here).
func contents(_ url: URL) -> [UInt8] {
    let fd = open(url.path, O_RDONLY)
    guard fd >= 0 else { fatalError("cannot read \(url.path)") }
    defer { close(fd) }
    var bytes: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n <= 0 { return bytes }
        bytes += buffer[..<n]
    }
}
