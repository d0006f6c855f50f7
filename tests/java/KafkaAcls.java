// ACLs on one topic for the anonymous principal of a PLAINTEXT listener, with the broker's
// own Admin API (Kafka 4 dropped the protocol versions aiokafka speaks for ACLs).
// Usage: java -cp 'LIBS/*' KafkaAcls.java BOOTSTRAP deny-write|allow TOPIC
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAcls {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        ResourcePattern topic = new ResourcePattern(ResourceType.TOPIC, args[2], PatternType.LITERAL);
        String who = "User:ANONYMOUS";
        List<AclBinding> acls = List.of(
            new AclBinding(topic, new AccessControlEntry(who, "*", AclOperation.ALL, AclPermissionType.ALLOW)),
            new AclBinding(topic, new AccessControlEntry(who, "*", AclOperation.WRITE, AclPermissionType.DENY)));
        try (Admin admin = Admin.create(props)) {
            if (args[1].equals("deny-write")) {
                admin.createAcls(acls).all().get();
            } else {
                admin.deleteAcls(acls.stream().map(AclBinding::toFilter).toList()).all().get();
            }
        }
        System.out.println("ok " + args[1] + " " + args[2]);
    }
}
