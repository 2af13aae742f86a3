import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.net.InetSocketAddress;

/**
 * mongo-java-server with its oplog enabled (change streams), on a free loopback port.
 * Prints "PORT <n>" once listening; stops when its standard input closes, so it never
 * outlives the test process that started it.
 */
public class MongoEmulator {
  public static void main(String[] args) throws Exception {
    MemoryBackend backend = new MemoryBackend();
    backend.enableOplog();
    MongoServer server = new MongoServer(backend);
    server.bind("127.0.0.1", 0);
    InetSocketAddress address = server.getLocalAddress();
    System.out.println("PORT " + address.getPort());
    System.out.flush();
    while (System.in.read() != -1) {
      // wait for the parent to close stdin
    }
    server.shutdownNow();
    System.exit(0);
  }
}
