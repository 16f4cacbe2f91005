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
/// scored or rejected, and the file's digest covers every byte.
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
    return 0
}
