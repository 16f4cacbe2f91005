// libFuzzer target: the Redis reply (RESP2) reader.
import Components

/// The first byte picks the piece size; replies are read until the input ends. The same
/// replies come out whatever the piece size, and nothing traps.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    func replies(piece: Int) -> [String] {
        var reader = RESPReader()
        var offset = 0
        var out: [String] = []
        while out.count < 1000 {
            do {
                let reply = try reader.reply { buffer in
                    guard offset < bytes.count else { throw RedisError("end") }
                    let end = min(bytes.count, offset + piece)
                    buffer.append(contentsOf: bytes[offset..<end])
                    offset = end
                }
                out.append("\(reply)")
            } catch {
                out.append("error: \(error)")
                break
            }
        }
        return out
    }
    if replies(piece: max(bytes.count, 1)) != replies(piece: 1 + Int(data[0]) % 7) { fatalError("replies depend on how the bytes arrive") }
    return 0
}
